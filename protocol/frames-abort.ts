/**
 * Version 4: an agent that gives a session up (its daemon was told to stop, or the run hit its
 * time limit) says so on a new connection, so that the server deletes the temporary file at once
 * instead of keeping it for a resume that will never come.
 *
 *   `ABRT` ver sessionId\n reason\n   →
 *                                     ←  AbortACK: status(1)  0 DISCARDED · 1 NOT_FOUND · 2 COMMITTED
 */
import { ABORT_ACK_SIZE, AbortStatus, Magic, MagicBytes, PROTOCOL_VERSION } from './constants.js';
import { line, messageLine, parse, status, type Decoded, u8 } from './codec.js';

export interface SessionAbort {
  version: number;
  sessionId: string;
  /** Why, for the server's log. */
  reason: string;
}

export interface AbortAck {
  status: AbortStatus;
}

export function encodeSessionAbort(a: Omit<SessionAbort, 'version'> & { version?: number }): Buffer {
  const F = 'SessionAbort';
  return Buffer.concat([MagicBytes.ABRT, Buffer.of(u8(F, 'version', a.version ?? PROTOCOL_VERSION)), line(F, 'sessionId', a.sessionId), messageLine(F, 'reason', a.reason)]);
}

export function decodeSessionAbort(buf: Buffer): Decoded<SessionAbort> | null {
  return parse(buf, 'SessionAbort', (p): SessionAbort => {
    p.magic(Magic.ABRT);
    const version = p.u8();
    const sessionId = p.line('sessionId');
    const reason = p.line('reason');
    return { version, sessionId, reason };
  });
}

export function encodeAbortAck(a: AbortAck): Buffer {
  const b = Buffer.alloc(ABORT_ACK_SIZE);
  b[0] = status('AbortACK', AbortStatus, 'AbortACK status', a.status);
  return b;
}

export function decodeAbortAck(buf: Buffer): Decoded<AbortAck> | null {
  return parse(buf, 'AbortACK', (p): AbortAck => ({ status: p.status(AbortStatus, 'AbortACK status') }));
}

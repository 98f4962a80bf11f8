/**
 * Frames of a backup session (spec §1) and of its resumption (§2): handshake, ACK, mode byte,
 * SACK, trailer, Final ACK, RSME and ResumeACK.
 */
import {
  AckStatus,
  FinalStatus,
  Magic,
  MagicBytes,
  PARALLEL_INIT_SIZE,
  PROTOCOL_VERSION,
  RESUME_ACK_COMMITTED_SIZE,
  RESUME_ACK_SIZE,
  ResumeStatus,
  SACK_SIZE,
  TRAILER_SIZE,
  speaksReasons,
} from './constants.js';
import { invalid, line, messageLine, parse, status, type Decoded, type Parser, u32, u64, u8, withMagic, writeU64 } from './codec.js';

/** `NBKP` ver agent\n storage\n backup\n [format\n] — client opens a backup session. */
export interface Handshake {
  version: number;
  agent: string;
  storage: string;
  backup: string;
  /** Version 3: the archive format, "gzip" or "zstd" (the server checks it). Version 2: gzip. */
  format?: string;
}
/** status · message\n · sessionId\n — server answers the handshake. */
export interface Ack {
  status: AckStatus;
  message: string;
  sessionId: string;
}
/** Mode byte 0x00 after ACK GO: one stream carries the body. */
export interface SingleMode {
  kind: 'single';
}
/** maxStreams u8 (1..255, doubles as the mode byte) · chunkSize u32. */
export interface ParallelInit {
  maxStreams: number;
  chunkSize: number;
}
export type Mode = SingleMode | ({ kind: 'parallel' } & ParallelInit);
/** `SACK` u64 offset — body bytes the server has written. */
export interface Sack {
  offset: number;
}
/** `DONE` sha256[32] u64 size — after the body (single) or on the primary (parallel). */
export interface Trailer {
  sha256: Buffer;
  size: number;
}
export interface FinalAck {
  status: FinalStatus;
  /** Version 3: why (empty for OK). */
  message?: string;
}
/** `RSME` ver sessionId\n agent\n storage\n. */
export interface Resume {
  version: number;
  sessionId: string;
  agent: string;
  storage: string;
}
export interface ResumeAck {
  status: ResumeStatus;
  /** OK: where to continue. COMMITTED: the committed archive's size. */
  lastOffset: number;
  /** COMMITTED only: the committed archive's SHA-256. */
  sha256?: Buffer;
}
/** `PJIN` ver sessionId\n streamIndex u8. */

/** What an agent reads on a single-stream data connection. */
export type ServerDataMessage = { type: 'sack'; offset: number } | ({ type: 'final' } & FinalAck);

// ─── §1 Backup session ────────────────────────────────────────────────────────────────────────

/**
 * Version 3 adds a fourth line, the archive format (default "gzip"); version 2 has none, and a
 * version this code does not know is read in its version-2 shape, enough for the server to refuse
 * it by name.
 */
function hasFormatLine(version: number): boolean {
  return version >= 0x03 && version <= PROTOCOL_VERSION;
}

export function encodeHandshake(h: Omit<Handshake, 'version'> & { version?: number }): Buffer {
  const F = 'Handshake';
  const version = u8(F, 'version', h.version ?? PROTOCOL_VERSION);
  const lines = [line(F, 'agent', h.agent), line(F, 'storage', h.storage), line(F, 'backup', h.backup)];
  if (hasFormatLine(version)) lines.push(line(F, 'format', h.format ?? 'gzip'));
  return Buffer.concat([MagicBytes.NBKP, Buffer.of(version), ...lines]);
}

export function decodeHandshake(buf: Buffer): Decoded<Handshake> | null {
  return parse(buf, 'Handshake', (p): Handshake => {
    p.magic(Magic.NBKP);
    const version = p.u8();
    const agent = p.line('agent');
    const storage = p.line('storage');
    const backup = p.line('backup');
    if (!hasFormatLine(version)) return { version, agent, storage, backup };
    return { version, agent, storage, backup, format: p.line('format') };
  });
}

/** sessionId must be non-empty for GO and empty otherwise (spec §1). */
export function encodeAck(a: Ack): Buffer {
  const F = 'ACK';
  const st = status(F, AckStatus, 'ACK status', a.status);
  if (st === AckStatus.GO && a.sessionId === '') throw invalid(F, 'bad-value', 'GO needs a sessionId');
  if (st !== AckStatus.GO && a.sessionId !== '') {
    throw invalid(F, 'bad-value', 'sessionId must be empty unless the status is GO');
  }
  return Buffer.concat([Buffer.of(st), messageLine(F, 'message', a.message), line(F, 'sessionId', a.sessionId)]);
}

export function decodeAck(buf: Buffer): Decoded<Ack> | null {
  return parse(buf, 'ACK', (p) => {
    const st = p.status(AckStatus, 'ACK status');
    const message = p.line('message');
    const sessionId = p.line('sessionId');
    return { status: st, message, sessionId };
  });
}

export function encodeSingleMode(): Buffer {
  return Buffer.of(0x00);
}

export function encodeParallelInit(init: ParallelInit): Buffer {
  const F = 'ParallelInit';
  const b = Buffer.alloc(PARALLEL_INIT_SIZE);
  b[0] = u8(F, 'maxStreams', init.maxStreams, 1);
  b.writeUInt32BE(u32(F, 'chunkSize', init.chunkSize, 1), 1);
  return b;
}

export function encodeMode(mode: Mode): Buffer {
  return mode.kind === 'single' ? encodeSingleMode() : encodeParallelInit(mode);
}

/** The byte after ACK GO: 0x00 single stream, or 1..255 starting a 5-byte ParallelInit. */
export function decodeMode(buf: Buffer): Decoded<Mode> | null {
  return parse(buf, 'Mode', (p): Mode => {
    const maxStreams = p.u8();
    if (maxStreams === 0) return { kind: 'single' };
    const chunkSize = p.u32();
    if (chunkSize === 0) throw p.fail('bad-value', 'ParallelInit chunkSize is 0');
    return { kind: 'parallel', maxStreams, chunkSize };
  });
}

/** Like decodeMode, but a single-stream byte is an error. */
export function decodeParallelInit(buf: Buffer): Decoded<ParallelInit> | null {
  return parse(buf, 'ParallelInit', (p) => {
    const maxStreams = p.u8();
    if (maxStreams === 0) throw p.fail('bad-value', 'maxStreams is 0 (that is the single-stream mode byte)');
    const chunkSize = p.u32();
    if (chunkSize === 0) throw p.fail('bad-value', 'chunkSize is 0');
    return { maxStreams, chunkSize };
  });
}

export function encodeSack(s: Sack): Buffer {
  const b = withMagic(SACK_SIZE, Magic.SACK);
  writeU64(b, u64('SACK', 'offset', s.offset), 4);
  return b;
}

export function decodeSack(buf: Buffer): Decoded<Sack> | null {
  return parse(buf, 'SACK', (p) => {
    p.magic(Magic.SACK);
    return { offset: p.u64('offset') };
  });
}

export function encodeTrailer(t: Trailer): Buffer {
  const F = 'Trailer';
  if (!(t.sha256 instanceof Uint8Array) || t.sha256.length !== 32) {
    throw invalid(F, 'bad-value', 'sha256 must be 32 bytes');
  }
  const b = withMagic(TRAILER_SIZE, Magic.DONE);
  b.set(t.sha256, 4);
  writeU64(b, u64(F, 'size', t.size), 36);
  return b;
}

export function decodeTrailer(buf: Buffer): Decoded<Trailer> | null {
  return parse(buf, 'Trailer', (p) => {
    p.magic(Magic.DONE);
    const sha256 = p.bytes(32);
    const size = p.u64('size');
    return { sha256, size };
  });
}

/** Version 2: one status byte. Version 3: the status byte and a message line. */
export function encodeFinalAck(f: FinalAck, version = 0x02): Buffer {
  const F = 'Final ACK';
  const st = Buffer.of(status(F, FinalStatus, 'Final ACK status', f.status));
  if (!speaksReasons(version)) {
    if (f.status === FinalStatus.NO_SPACE) throw invalid(F, 'bad-status', 'NO_SPACE does not exist in version 2');
    return st;
  }
  return Buffer.concat([st, messageLine(F, 'message', f.message ?? '')]);
}

function finalBody(p: Parser, version: number, field: string): FinalAck {
  const st = p.status(FinalStatus, field);
  if (!speaksReasons(version)) return { status: st };
  return { status: st, message: p.line('message') };
}

/** The Final ACK decoder of a protocol version. */
export function finalAckDecoder(version: number): (buf: Buffer) => Decoded<FinalAck> | null {
  return (buf) => parse(buf, 'Final ACK', (p) => finalBody(p, version, 'Final ACK status'));
}

/** A version-2 Final ACK (one status byte). */
export const decodeFinalAck = finalAckDecoder(0x02);

/** SACK (first byte "S") or Final ACK: what a single-stream agent of a version reads. */
export function serverDataMessageDecoder(version: number): (buf: Buffer) => Decoded<ServerDataMessage> | null {
  return (buf) =>
    parse(buf, 'server data message', (p): ServerDataMessage => {
      if (p.peekU8() === MagicBytes.SACK[0]) {
        p.magic(Magic.SACK);
        return { type: 'sack', offset: p.u64('SACK offset') };
      }
      return { type: 'final', ...finalBody(p, version, 'Final ACK status (or SACK magic)') };
    });
}

/** What a version-2 single-stream agent reads. */
export const decodeServerDataMessage = serverDataMessageDecoder(0x02);

export function encodeServerDataMessage(m: ServerDataMessage, version = 0x02): Buffer {
  return m.type === 'sack' ? encodeSack(m) : encodeFinalAck(m, version);
}

// ─── §2 Resume ────────────────────────────────────────────────────────────────────────────────

export function encodeResume(r: Omit<Resume, 'version'> & { version?: number }): Buffer {
  const F = 'Resume';
  const version = u8(F, 'version', r.version ?? PROTOCOL_VERSION);
  return Buffer.concat([
    MagicBytes.RSME,
    Buffer.of(version),
    line(F, 'sessionId', r.sessionId),
    line(F, 'agent', r.agent),
    line(F, 'storage', r.storage),
  ]);
}

export function decodeResume(buf: Buffer): Decoded<Resume> | null {
  return parse(buf, 'Resume', (p) => {
    p.magic(Magic.RSME);
    const version = p.u8();
    const sessionId = p.line('sessionId');
    const agent = p.line('agent');
    const storage = p.line('storage');
    return { version, sessionId, agent, storage };
  });
}

/** status · u64 offset (9 bytes); COMMITTED adds the archive's sha256[32] (41 bytes). */
export function encodeResumeAck(r: ResumeAck): Buffer {
  const F = 'ResumeACK';
  const committed = r.status === ResumeStatus.COMMITTED;
  if (committed && !(r.sha256 instanceof Uint8Array && r.sha256.length === 32)) throw invalid(F, 'bad-value', 'COMMITTED needs a 32-byte sha256');
  const b = Buffer.alloc(committed ? RESUME_ACK_COMMITTED_SIZE : RESUME_ACK_SIZE);
  b[0] = status(F, ResumeStatus, 'ResumeACK status', r.status);
  writeU64(b, u64(F, 'lastOffset', r.lastOffset), 1);
  if (committed) b.set(r.sha256!, RESUME_ACK_SIZE);
  return b;
}

export function decodeResumeAck(buf: Buffer): Decoded<ResumeAck> | null {
  return parse(buf, 'ResumeACK', (p): ResumeAck => {
    const st = p.status(ResumeStatus, 'ResumeACK status');
    const lastOffset = p.u64('lastOffset');
    if (st !== ResumeStatus.COMMITTED) return { status: st, lastOffset };
    return { status: st, lastOffset, sha256: p.bytes(32) };
  });
}

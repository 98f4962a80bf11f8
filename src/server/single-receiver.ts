import type tls from 'node:tls';
import { encodeSack } from '../../protocol/frames.js';
import type { Leftover } from '../net/frame-socket.js';
import type { BodyReceiver } from './body-receiver.js';
import { SocketPump, type PumpEnd } from './socket-pump.js';

/**
 * One connection's share of a single-stream session (protocol §1): body bytes into the session's
 * BodyReceiver, and SACKs back. A SACK goes out once per MiB written, and 250 ms after the last
 * write when the stream goes quiet, so the agent can free its ring buffer.
 */
const SACK_EVERY = 1024 * 1024;

/** How long after the last write the server acknowledges a quiet stream anyway. */
const IDLE_SACK_MS = 250;

/**
 * Resolves when the agent half-closes ('eof'), the connection breaks or goes idle, or a write
 * fails ('stopped'); every byte accepted is in the file (or the receiver has failed) by then.
 * After a half-close the agent still hears about every MiB written while the queue drains, and
 * the final offset.
 */
export async function receiveBody(receiver: BodyReceiver, socket: tls.TLSSocket, early: Leftover, idleMs: number): Promise<PumpEnd> {
  let lastSack = receiver.written;
  let quietTimer: NodeJS.Timeout | null = null;
  let pumping = true;
  const sack = (): void => {
    if (receiver.written > lastSack && socket.writable) {
      lastSack = receiver.written;
      socket.write(encodeSack({ offset: lastSack }));
    }
  };
  receiver.setOnWritten((written) => {
    if (written - lastSack >= SACK_EVERY) sack();
    if (!pumping) return;
    if (quietTimer) clearTimeout(quietTimer);
    quietTimer = setTimeout(sack, IDLE_SACK_MS);
  });
  try {
    const pump = new SocketPump(socket, receiver, { idleMs });
    // A failed write (the disk is full) ends the session at once: no point reading the rest.
    void receiver.whenFailed().then((err) => pump.stop(err.message));
    const end = await pump.run(early);
    pumping = false;
    if (quietTimer) clearTimeout(quietTimer);
    await receiver.flushed().catch(() => undefined);
    if (end.how === 'eof') sack();
    return end;
  } finally {
    pumping = false;
    if (quietTimer) clearTimeout(quietTimer);
    receiver.setOnWritten(undefined);
  }
}

import os from 'node:os';
import { encodeControlFromServer, decodeControlFromAgent, type ControlOpen } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import { whenDrained } from '../../net/frame-socket.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import type { ControlLink } from '../control/control-hub.js';

/**
 * `CTRL`: an agent's long-lived control channel (spec §5). Each ControlPing is answered with a
 * ControlPong carrying the server's load (1-minute load average per CPU, 0..1) and the least free
 * space of its storages' filesystems, in MiB. 2.5 × the agent's keepalive interval without a frame
 * is a dead channel: it is closed. The channel carries the server's admission (CDFE, CADM),
 * rotation (CROT/CRAK) and abort (CABT) messages; no backup ever depends on it being up.
 */
const MAX_DEAD_MS = 24 * 3600_000;
/** Pongs the agent has not taken yet, at most: past this, no ping is read until they drain. */
const MAX_UNSENT = 64 * 1024;
/** How long one reading of the storages' free space answers pings (a flood costs no statfs each). */
const FREE_SPACE_FRESH_MS = 1000;

export async function serveControl(ctx: ServerContext, conn: Connection, open: ControlOpen): Promise<void> {
  const { socket, frames, remote } = conn;
  const agent = peerName(socket);
  if (!agent) throw new NbackupError('protocol', 'control channel without a certificate CN');
  const deadMs = Math.min(MAX_DEAD_MS, open.keepaliveSeconds * 2500);
  const log = ctx.log.child({ agent, remote });
  const link: ControlLink = {
    agent,
    send: (frame) => {
      if (!socket.destroyed) socket.write(frame);
    },
    close: (why) => {
      log.info({ reason: why }, 'control channel closed');
      socket.destroy();
    },
  };
  ctx.control.attach(link);
  log.info({ keepaliveS: open.keepaliveSeconds }, 'control channel opened');
  let free = { at: -Infinity, mib: 0 };
  try {
    for (;;) {
      const msg = await frames.read(decodeControlFromAgent, deadMs, 'control frame');
      if (msg.type === 'ping') {
        if (Date.now() - free.at >= FREE_SPACE_FRESH_MS) free = { at: Date.now(), mib: await leastFreeMiB(ctx) };
        link.send(encodeControlFromServer({ type: 'pong', timestampNs: msg.timestampNs, load: serverLoad(), freeMiB: free.mib }));
        // An agent that pings without reading its pongs is held back (the FrameSocket pauses).
        if (socket.writableLength > MAX_UNSENT) await whenDrained(socket, { ms: deadMs, what: 'pongs' });
      } else {
        log.info({ stream: msg.streamIndex }, 'rotation acknowledged');
        ctx.control.rotateAcked(agent, msg.streamIndex);
      }
    }
  } catch (err) {
    if (!socket.destroyed) {
      const dead = err instanceof NbackupError && err.kind === 'timeout';
      log.warn({ reason: dead ? `no frame within ${deadMs / 1000}s (2.5 × keepalive)` : errorMessage(err) }, dead ? 'control channel dead' : 'control channel closed');
    }
  } finally {
    ctx.control.detach(link);
    socket.destroy();
  }
}

/** The 1-minute load average per CPU, as a fraction 0..1. */
function serverLoad(): number {
  return Math.max(0, Math.min(1, os.loadavg()[0] / os.availableParallelism()));
}

/** The least free space of any storage's filesystem, in MiB (0 if one cannot be read). */
async function leastFreeMiB(ctx: ServerContext): Promise<number> {
  let least = 0xffffffff;
  for (const s of ctx.storages.values()) {
    const free = await s.freeBytes().catch(() => 0);
    least = Math.min(least, Math.floor(free / (1024 * 1024)));
  }
  return least;
}

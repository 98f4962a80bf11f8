import { HealthStatus } from '../../../protocol/constants.js';
import { encodeHealthPong } from '../../../protocol/frames.js';
import type { Connection, ServerContext } from '../context.js';

/** `PING`: READY, BUSY (a backup is being received) or LOW_DISK, and the least free space of any storage. */
export async function serveHealth(ctx: ServerContext, conn: Connection): Promise<void> {
  let free = Number.MAX_SAFE_INTEGER;
  let low = false;
  for (const s of ctx.storages.values()) {
    const f = await s.freeBytes();
    free = Math.min(free, f);
    if (f < s.config.min_free) low = true;
  }
  const status = low ? HealthStatus.LOW_DISK : ctx.registry.receiving ? HealthStatus.BUSY : HealthStatus.READY;
  conn.socket.end(encodeHealthPong({ status, freeBytes: free }));
}

import { HealthStatus } from '../../../protocol/constants.js';
import { encodeHealthPong } from '../../../protocol/frames.js';
import { errorMessage } from '../../errors.js';
import type { Connection, ServerContext } from '../context.js';

/**
 * `PING`: READY, BUSY (a backup is being received), LOW_DISK (a storage below its reserve) or
 * MAINTENANCE (a storage cannot be used at all), and the least free space of any storage.
 */
export async function serveHealth(ctx: ServerContext, conn: Connection): Promise<void> {
  let free = Number.MAX_SAFE_INTEGER;
  let low = false;
  let broken = false;
  for (const s of ctx.storages.values()) {
    let f: number;
    try {
      f = await s.freeBytes();
    } catch (err) {
      broken = true;
      ctx.log.warn({ storage: s.name, err: errorMessage(err) }, 'health check: storage cannot be used');
      continue;
    }
    free = Math.min(free, f);
    if (f < s.config.min_free) low = true;
  }
  if (free === Number.MAX_SAFE_INTEGER) free = 0;
  const status = broken ? HealthStatus.MAINTENANCE : low ? HealthStatus.LOW_DISK : ctx.registry.receiving ? HealthStatus.BUSY : HealthStatus.READY;
  conn.socket.end(encodeHealthPong({ status, freeBytes: free }));
}

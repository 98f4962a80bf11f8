import { HealthStatus, StorageState } from '../../../protocol/constants.js';
import { encodeHealthPong, encodeHealthReport, encodeStorageHealth, type StorageHealth } from '../../../protocol/frames.js';
import { errorMessage } from '../../errors.js';
import type { Connection, ServerContext } from '../context.js';

/** Every storage's free space, reserve and state; a storage that cannot be read is UNUSABLE. */
async function storageStates(ctx: ServerContext): Promise<StorageHealth[]> {
  const out: StorageHealth[] = [];
  for (const s of ctx.storages.values()) {
    const minFreeBytes = s.config.min_free;
    try {
      const freeBytes = await s.freeBytes();
      out.push({ name: s.name, state: freeBytes < minFreeBytes ? StorageState.LOW : StorageState.OK, freeBytes, minFreeBytes });
    } catch (err) {
      ctx.log.warn({ storage: s.name, err: errorMessage(err) }, 'health check: storage cannot be used');
      out.push({ name: s.name, state: StorageState.UNUSABLE, freeBytes: 0, minFreeBytes });
    }
  }
  return out;
}

/** MAINTENANCE (a storage cannot be used), LOW_DISK (one is below its reserve), BUSY (receiving), READY. */
function overall(ctx: ServerContext, states: readonly StorageHealth[]): HealthStatus {
  if (states.some((s) => s.state === StorageState.UNUSABLE)) return HealthStatus.MAINTENANCE;
  if (states.some((s) => s.state === StorageState.LOW)) return HealthStatus.LOW_DISK;
  return ctx.registry.receiving ? HealthStatus.BUSY : HealthStatus.READY;
}

/** `PING` (versions 2–4): the status and the least free space of any storage, unnamed. */
export async function serveHealth(ctx: ServerContext, conn: Connection): Promise<void> {
  const states = await storageStates(ctx);
  const usable = states.filter((s) => s.state !== StorageState.UNUSABLE);
  const free = usable.length === 0 ? 0 : Math.min(...usable.map((s) => s.freeBytes));
  conn.socket.end(encodeHealthPong({ status: overall(ctx, states), freeBytes: free }));
}

/** `HLTH` (version 5): the status, then every storage by name with its free space, reserve and state. */
export async function serveHealthReport(ctx: ServerContext, conn: Connection): Promise<void> {
  const states = await storageStates(ctx);
  conn.socket.end(Buffer.concat([encodeHealthReport({ status: overall(ctx, states), storages: states.length }), ...states.map(encodeStorageHealth)]));
}

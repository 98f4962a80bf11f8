import type tls from 'node:tls';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { connectServer } from '../../net/connect-server.js';
import { backoffSignal, type BackupContext, type RunStats } from './context.js';
import { isRetryable, sleep, type RetryBudget } from './retry.js';

/**
 * Connects, retrying with backoff while the failure is a network one and the budget lasts. The
 * run's abort or a stopping daemon ends an attempt under way as it ends a back-off.
 */
export async function connectWithRetry(ctx: BackupContext, log: Logger, stats: RunStats, budget: RetryBudget): Promise<tls.TLSSocket> {
  const stop = backoffSignal(ctx);
  for (;;) {
    try {
      return await connectServer(ctx.config.server, ctx.material, ctx.config.retry.connect_timeout, stop);
    } catch (err) {
      if (stop?.aborted) throw stop.reason;
      const delay = budget.fail();
      if (!isRetryable(err) || delay === null) throw err;
      log.warn({ err: errorMessage(err), attempt: budget.failures, delayMs: delay }, 'connection failed; retrying');
      stats.reconnects++;
      await sleep(delay, stop);
    }
  }
}

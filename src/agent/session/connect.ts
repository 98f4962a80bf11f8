import type tls from 'node:tls';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { connectServer } from '../../net/connect-server.js';
import { backoffSignal, type BackupContext, type RunStats } from './context.js';
import { isRetryable, sleep, type RetryBudget } from './retry.js';

/**
 * Connects and runs `greet` on the connection (its first frame and the server's answer), retrying
 * with backoff while the failure is a network one and the budget lasts: a server that closes the
 * connection before it answers (one restarting, or over a connection limit) is tried again as one
 * that could not be reached. A failure that is not a network one (a refusal) ends it at once,
 * without drawing on the budget. The run's abort or a stopping daemon ends an attempt under way as
 * it ends a back-off. The connection is destroyed when `greet` throws.
 */
export async function connectAndGreet<T>(
  ctx: BackupContext,
  log: Logger,
  stats: RunStats,
  budget: RetryBudget,
  greet: (socket: tls.TLSSocket) => Promise<T>,
): Promise<T> {
  const stop = backoffSignal(ctx);
  for (;;) {
    let socket: tls.TLSSocket | undefined;
    try {
      socket = await connectServer(ctx.config.server, ctx.material, ctx.config.retry.connect_timeout, stop);
      return await greet(socket);
    } catch (err) {
      socket?.destroy();
      if (stop?.aborted) throw stop.reason;
      // A refusal (WAIT at max_concurrent_sessions among them) is an answer, not a failure: only a
      // connection that failed draws on the budget that later breaks (and resumes) need.
      if (!isRetryable(err)) throw err;
      const delay = budget.fail();
      if (delay === null) throw err;
      log.warn({ err: errorMessage(err), attempt: budget.failures, delayMs: delay }, socket ? 'no answer from the server; retrying' : 'connection failed; retrying');
      stats.reconnects++;
      await sleep(delay, stop);
    }
  }
}

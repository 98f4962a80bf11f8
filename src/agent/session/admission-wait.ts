import type { BackupConfig } from '../../config/index.js';
import type { Logger } from '../../log/logger.js';
import { backoffSignal, type BackupContext, type RunStats } from './context.js';
import { PrimaryConnection, ServerBusy } from './primary.js';
import { sleep, type RetryBudget } from './retry.js';

/**
 * Opens the session, waiting while the server answers WAIT (it is at max_concurrent_sessions)
 * instead of failing the run. (BUSY, this very backup already running, still fails at once.) With a control channel the agent
 * waits for the server's CADM (at most as long as its CDFE said, else WAIT_FOR_ADMIT_MS) and
 * tries again; without one it retries after 5 s, doubling up to a minute. The wait ends with the
 * run limit or a stopping daemon (backoffSignal).
 */
const FIRST_RETRY_MS = 5000;
const MAX_RETRY_MS = 60_000;
const WAIT_FOR_ADMIT_MS = 60_000;

export async function openAdmitted(ctx: BackupContext, entry: BackupConfig, log: Logger, stats: RunStats, budget: RetryBudget): Promise<PrimaryConnection> {
  let delay = FIRST_RETRY_MS;
  const since = Date.now();
  for (let waits = 0; ; waits++) {
    const asked = Date.now();
    try {
      const primary = await PrimaryConnection.open(ctx, entry, log, stats, budget);
      if (waits > 0) log.info({ waits, waitedS: Math.round((Date.now() - since) / 1000) }, 'admitted after waiting');
      return primary;
    } catch (err) {
      if (!(err instanceof ServerBusy)) throw err;
      const control = ctx.control?.connected ? ctx.control : undefined;
      log.info({ reason: err.message, waitingFor: control ? 'admission on the control channel' : `${delay / 1000}s` }, 'server at capacity; waiting for admission');
      if (control) {
        await control.waitForAdmission(asked, WAIT_FOR_ADMIT_MS, backoffSignal(ctx));
      } else {
        await sleep(delay, backoffSignal(ctx));
        delay = Math.min(delay * 2, MAX_RETRY_MS);
      }
    }
  }
}

import type { RetryConfig } from '../../config/index.js';
import { NbackupError } from '../../errors.js';

/**
 * When to try again: failures of a session's connections are counted against
 * `retry.max_attempts`, and each next try waits `retry.initial_delay` doubling up to `max_delay`.
 */

/** A failure a new connection may cure (the link broke, or stayed silent too long). */
export function isRetryable(err: unknown): boolean {
  return err instanceof NbackupError && (err.kind === 'network' || err.kind === 'timeout');
}

/**
 * The server no longer has the session (or the resume point left the ring buffer): the backup job
 * starts a new session from the beginning. Control flow inside the job, never shown to a user.
 */
export class RestartSession extends Error {}

export function backoff(retry: RetryConfig, failures: number): number {
  return Math.min(retry.max_delay, retry.initial_delay * 2 ** Math.max(0, failures - 1));
}

/** The failures of one connection's life (the primary, or a single stream) against max_attempts. */
export class RetryBudget {
  failures = 0;

  constructor(private readonly retry: RetryConfig) {}

  /** Records a failure: how long to wait before the next try, or null when no try is left. */
  fail(): number | null {
    this.failures++;
    if (this.failures >= this.retry.max_attempts) return null;
    return backoff(this.retry, this.failures);
  }
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

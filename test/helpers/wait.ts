/**
 * Every way a test waits, in one place. Each wait is bounded: it resolves when the awaited state
 * is reached and rejects (or reports false) once its time is up, with what it was waiting for.
 *
 *   waitUntil   a synchronous predicate, polled every 10 ms
 *   pollUntil   an asynchronous predicate (a directory listing, a health check), polled;
 *               reports false on timeout, so the caller asserts with its own message
 *   waitUntilAsync  the same, rejecting on timeout like waitUntil
 *   Waiters     a synchronous predicate re-checked whenever its owner says something changed
 *   withTimeout a promise that must settle in time
 *   sleep       scenario timing only ("nothing happens for X ms", a deliberately slow peer),
 *               never to let something happen: wait for that state or log line instead
 *
 * Log lines of a spawned process are awaited with LoggedProcess.waitForLog (test/helpers/proc.ts),
 * built on Waiters.
 */
import type { Server } from 'node:net';

/**
 * Resolves once `pred()` is true, checked every 10 ms; rejects after `timeoutMs` with
 * "timed out after N ms waiting for WHAT; DETAILS" (details computed at that moment), or with
 * whatever `pred` throws.
 */
export function waitUntil(pred: () => boolean, timeoutMs: number, what: string, details: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = (): void => {
      let ok = false;
      try {
        ok = pred();
      } catch (err) {
        reject(err);
        return;
      }
      if (ok) return resolve();
      if (Date.now() - started >= timeoutMs) {
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${details()}`));
        return;
      }
      setTimeout(check, 10);
    };
    check();
  });
}

/**
 * Resolves true once `pred()` resolves true, checked every `intervalMs` (first at once); resolves
 * false when it is still false after `timeoutMs`, so the caller asserts with its own message.
 * Rejects with whatever `pred` throws.
 */
export async function pollUntil(pred: () => Promise<boolean>, timeoutMs: number, intervalMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  // The count bound only matters if the clock misbehaves: the deadline ends the loop first.
  const maxChecks = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 2;
  for (let i = 0; i < maxChecks; i++) {
    if (await pred()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
  return false;
}

/**
 * Resolves once `pred()` resolves true, checked every `intervalMs`; rejects after `timeoutMs` with
 * "timed out after N ms waiting for WHAT; DETAILS", or with whatever `pred` throws.
 */
export async function waitUntilAsync(
  pred: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
  details: () => Promise<string> | string = () => '',
  intervalMs = 25,
): Promise<void> {
  if (await pollUntil(pred, timeoutMs, intervalMs)) return;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${await details()}`);
}

/**
 * Event-driven bounded waits for an object whose state changes on events (a socket, a process's
 * output): the owner calls notify() after each change, and until() re-checks its predicate then.
 */
export class Waiters {
  private readonly pending = new Set<() => void>();

  /** Re-checks every pending predicate. */
  notify(): void {
    for (const check of [...this.pending]) check();
  }

  /**
   * Resolves once `pred()` is true (checked now and at every notify()); rejects after `timeoutMs`
   * with "timed out after N ms waiting for WHAT; DETAILS", or with whatever `pred` throws.
   */
  until(pred: () => boolean, timeoutMs: number, what: string, details: () => string): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        this.pending.delete(check);
        fn();
      };
      const check = (): void => {
        let ok: boolean;
        try {
          ok = pred();
        } catch (err) {
          finish(() => reject(err));
          return;
        }
        if (ok) finish(resolve);
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${details()}`))),
        timeoutMs,
      );
      this.pending.add(check);
      check();
    });
  }
}

/** Settles like `p`, or rejects with "timed out after N ms: WHAT" if `p` has not settled by then. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Resolves after `ms`. For scenario timing only (a negative check's window, a paced write, a
 * fixed grace period): every call site says in a comment why it is not synchronisation.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Listens on a free port of 127.0.0.1; resolves once bound. */
export function listenOnLoopback(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', onError);
      resolve();
    });
  });
}

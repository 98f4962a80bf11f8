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

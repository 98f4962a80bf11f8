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

import { sleep } from './retry.js';

/**
 * `bandwidth_limit`: one token bucket shared by every stream of a backup. Tokens accrue at `rate`
 * bytes per second up to a burst of 50 ms worth, so over any second the wire carries at most
 * rate + 5 %, and an idle spell never saves up for a burst. Writers queue in order (take() is
 * FIFO), each waiting for its whole slice; slices are kept to 50 ms worth too (sliceBytes).
 */
const BURST_SECONDS = 0.05;

export class Pacer {
  private tokens = 0;
  private last = performance.now();
  private queue: Promise<void> = Promise.resolve();
  /** The largest write that keeps the pace smooth. */
  readonly sliceBytes: number;
  private readonly burst: number;

  constructor(readonly rate: number) {
    this.burst = Math.max(1024, Math.floor(rate * BURST_SECONDS));
    this.sliceBytes = this.burst;
  }

  /** Resolves once `bytes` (at most sliceBytes) may go on the wire; rejects if `signal` aborts. */
  take(bytes: number, signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(() => this.wait(Math.min(bytes, this.burst), signal));
    // A rejected turn (aborted) must not block the writers after it.
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async wait(bytes: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
      if (this.tokens >= bytes) {
        this.tokens -= bytes;
        return;
      }
      await sleep(Math.max(1, Math.ceil(((bytes - this.tokens) / this.rate) * 1000)), signal);
    }
  }
}

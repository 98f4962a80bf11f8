/**
 * Decides how many parallel streams to use: start with one, add a stream while throughput grows,
 * stop at `max` or as soon as one more stream stopped paying off.
 *
 * Hysteresis: throughput is sampled once per window; after each change the scaler waits `settle`
 * windows, then compares the mean of those windows with the mean of the `settle` windows before
 * the change. Only a gain of at least `minGain` (a fraction) adds the next stream; a smaller one
 * ends the probing for this backup (the stream added last stays: removing it would cost a
 * re-dispatch for nothing, it only carries its share).
 */
export interface ScaleDecision {
  action: 'add' | 'hold';
  streams: number;
  /** Mean throughput (bytes/s) before and after the last change. */
  beforeBps: number;
  afterBps: number;
  gain: number;
  reason: string;
}

export interface AutoScalerOptions {
  max: number;
  /** Windows to wait after a change before judging it. Default 3. */
  settle?: number;
  /** Minimum relative gain that justifies the next stream. Default 0.1 (10 %). */
  minGain?: number;
}

export class AutoScaler {
  streams = 1;
  private readonly samples: number[] = [];
  /** Index in `samples` where the current stream count began. */
  private since = 0;
  /** Mean throughput measured with the previous stream count. */
  private baseline: number | null = null;
  private done: boolean;
  private readonly max: number;
  private readonly settle: number;
  private readonly minGain: number;

  constructor(opts: AutoScalerOptions) {
    this.settle = Math.max(1, opts.settle ?? 3);
    this.minGain = opts.minGain ?? 0.1;
    this.done = opts.max <= 1;
    this.max = opts.max;
  }

  get settled(): boolean {
    return this.done;
  }

  /**
   * Records one window's throughput (bytes/s). Returns a decision when the stream count should
   * change or probing ends, otherwise null.
   */
  sample(bps: number): ScaleDecision | null {
    this.samples.push(bps);
    if (this.done || this.samples.length - this.since < this.settle) return null;
    const window = this.samples.slice(this.samples.length - this.settle);
    const mean = window.reduce((a, b) => a + b, 0) / window.length;
    if (this.baseline === null) {
      // One stream measured: always try a second one.
      return this.add(mean, mean, 0, 'first measurement');
    }
    const gain = this.baseline > 0 ? (mean - this.baseline) / this.baseline : mean > 0 ? 1 : 0;
    if (gain >= this.minGain) {
      if (this.streams >= this.max) {
        this.done = true;
        return { action: 'hold', streams: this.streams, beforeBps: this.baseline, afterBps: mean, gain, reason: `reached the configured ${this.max} streams` };
      }
      return this.add(this.baseline, mean, gain, `throughput grew ${(gain * 100).toFixed(0)}% with the last stream`);
    }
    this.done = true;
    return {
      action: 'hold',
      streams: this.streams,
      beforeBps: this.baseline,
      afterBps: mean,
      gain,
      reason: `throughput grew only ${(gain * 100).toFixed(0)}% with the last stream (needs ${(this.minGain * 100).toFixed(0)}%)`,
    };
  }

  private add(before: number, after: number, gain: number, reason: string): ScaleDecision {
    if (this.streams >= this.max) {
      this.done = true;
      return { action: 'hold', streams: this.streams, beforeBps: before, afterBps: after, gain, reason: `reached the configured ${this.max} streams` };
    }
    this.baseline = after;
    this.streams++;
    this.since = this.samples.length;
    return { action: 'add', streams: this.streams, beforeBps: before, afterBps: after, gain, reason };
  }
}

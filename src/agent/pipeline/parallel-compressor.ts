import { NbackupError } from '../../errors.js';
import type { BlockCodec } from './codecs.js';

/**
 * Compresses fixed-size blocks concurrently on libuv's thread pool and delivers the results in
 * order. Each block becomes one complete gzip member (concatenated members are one gzip stream,
 * RFC 1952 §2.2) or zstd frame (likewise for zstd): `gzip -t` / `zstd -t` and GNU tar read the
 * whole as one.
 *
 * At most `maxInFlight` blocks are being compressed or waiting for delivery at once. A slot is
 * freed only after the downstream `deliver` has resolved, so a slow consumer (full ring buffer,
 * slow socket) stops the packer instead of piling up compressed output.
 */
export interface ParallelCompressorOptions {
  codec: BlockCodec;
  maxInFlight: number;
  /** Largest block pushed; sizes the reusable output buffers. */
  blockSize: number;
  /**
   * Takes one compressed block. The buffer is only valid until the returned promise settles (it is
   * reused for a later block): copy what must be kept.
   */
  deliver: (compressed: Buffer) => Promise<void> | void;
  /** Called with each input block once the compressor no longer needs it, for reuse by the packer. */
  recycle?: (block: Buffer) => void;
}

export class ParallelCompressor {
  private inFlight = 0;
  private nextSeq = 0;
  private nextDeliver = 0;
  private readonly ready = new Map<number, { out: Buffer; output: Buffer }>();
  private delivering = false;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  /** Output buffers of delivered blocks, reused: at most `maxInFlight` ever exist. */
  private readonly outputs: Buffer[] = [];
  private readonly outputSize: number;
  readonly codec: BlockCodec;
  bytesIn = 0;
  bytesOut = 0;

  constructor(private readonly opts: ParallelCompressorOptions) {
    this.codec = opts.codec;
    this.outputSize = this.codec.engine === 'zlib' ? 0 : this.codec.bound(opts.blockSize);
  }

  /** Queues one block; resolves once there is room for the next. */
  async push(block: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (block.length > this.opts.blockSize) throw new NbackupError('internal', `block of ${block.length} bytes exceeds the block size ${this.opts.blockSize}`);
    while (this.inFlight >= this.opts.maxInFlight) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      if (this.failure) throw this.failure;
    }
    const seq = this.nextSeq++;
    this.inFlight++;
    this.bytesIn += block.length;
    const output = this.outputs.pop() ?? Buffer.allocUnsafeSlow(this.outputSize);
    this.codec.compress(block, output).then(
      (out) => {
        this.opts.recycle?.(block);
        this.ready.set(seq, { out, output });
        void this.pump();
      },
      (err: Error) => {
        this.opts.recycle?.(block);
        this.fail(new NbackupError('internal', `${this.codec.format} compression failed: ${err.message}`, { cause: err }));
      },
    );
  }

  /** Resolves when every pushed block has been compressed and delivered. */
  async end(): Promise<void> {
    while (this.inFlight > 0 && !this.failure) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  /** Stops everything: pending and future pushes reject with `err`. */
  fail(err: Error): void {
    if (!this.failure) this.failure = err;
    this.wake();
  }

  private async pump(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (!this.failure && this.ready.has(this.nextDeliver)) {
        const { out, output } = this.ready.get(this.nextDeliver)!;
        this.ready.delete(this.nextDeliver);
        this.nextDeliver++;
        this.bytesOut += out.length;
        await this.opts.deliver(out);
        if (output.length > 0) this.outputs.push(output);
        this.inFlight--;
        this.wake();
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new NbackupError('internal', String(err)));
    } finally {
      this.delivering = false;
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }
}

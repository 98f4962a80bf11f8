import zlib from 'node:zlib';
import { NbackupError } from '../errors.js';

/**
 * Compresses fixed-size blocks concurrently on libuv's thread pool and delivers the results in
 * order. Each block becomes one complete gzip member; concatenated members are a valid gzip
 * stream (RFC 1952 §2.2) that `gzip -t`, `gzip -d` and GNU tar read as one.
 *
 * At most `maxInFlight` blocks are being compressed or waiting for delivery at once. A slot is
 * freed only after the downstream `deliver` has resolved, so a slow consumer (full ring buffer,
 * slow socket) stops the packer instead of piling up compressed output.
 */
export interface ParallelGzipOptions {
  level: number;
  maxInFlight: number;
  /** Size of the blocks pushed; sizes zlib's output buffer so one block is one thread-pool job. */
  blockSize: number;
  deliver: (compressed: Buffer) => Promise<void> | void;
  /** Called with each input block once zlib no longer needs it, for reuse by the packer. */
  recycle?: (block: Buffer) => void;
}

export class ParallelGzip {
  private inFlight = 0;
  private nextSeq = 0;
  private nextDeliver = 0;
  private readonly ready = new Map<number, Buffer>();
  private delivering = false;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  private readonly zopts: zlib.ZlibOptions;
  bytesIn = 0;
  bytesOut = 0;

  constructor(private readonly opts: ParallelGzipOptions) {
    // One output buffer large enough for a whole block (deflate's worst-case expansion is tiny)
    // means one thread-pool round trip per block instead of one per 16 KiB.
    this.zopts = { level: opts.level, chunkSize: opts.blockSize + (opts.blockSize >> 4) + 1024 };
  }

  /** Queues one block; resolves once there is room for the next. */
  async push(block: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    while (this.inFlight >= this.opts.maxInFlight) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      if (this.failure) throw this.failure;
    }
    const seq = this.nextSeq++;
    this.inFlight++;
    this.bytesIn += block.length;
    zlib.gzip(block, this.zopts, (err, out) => {
      this.opts.recycle?.(block);
      if (err) {
        this.fail(new NbackupError('internal', `gzip failed: ${err.message}`, { cause: err }));
        return;
      }
      this.ready.set(seq, out);
      void this.pump();
    });
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
        const out = this.ready.get(this.nextDeliver)!;
        this.ready.delete(this.nextDeliver);
        this.nextDeliver++;
        this.bytesOut += out.length;
        await this.opts.deliver(out);
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

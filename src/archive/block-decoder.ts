import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import type { ArchiveFormat } from '../config/index.js';
import { NbackupError } from '../errors.js';
import { loadAddon } from '../native/addons.js';
import type { IndexHeader } from './index-header.js';

/**
 * Decompression when the block layout is known (from the archive's index): the compressed bytes
 * are cut at the blocks' boundaries and each block is decompressed on its own on the thread pool,
 * several at once, and put back in order. Every block must give exactly its share of the tar, so
 * an index that does not describe the archive stops the restore instead of feeding it wrong bytes.
 * gzip blocks go to libdeflate when the codec addon is there, else to node:zlib (still on the pool);
 * zstd blocks need the addon.
 */
export interface BlockLayout {
  format: ArchiveFormat;
  /** Compressed size of each block, in archive order, from `firstBlock` on. */
  blocks: readonly number[];
  /** The archive-wide number of the first of `blocks` (its tar offset is firstBlock × blockSize). */
  firstBlock: number;
  blockSize: number;
  tarSize: number;
}

interface BlockAddon {
  gzipDecompress(members: Buffer, output: Buffer, cb: (err: Error | null, n: number) => void): void;
  zstdDecompress(frame: Buffer, output: Buffer, cb: (err: Error | null, n: number) => void): void;
}

/** Largest block accepted from an index: what the agent writes is 1 MiB; a hostile index claims more. */
export const MAX_BLOCK_SIZE = 64 * 1024 * 1024;
/** Blocks being decompressed (or done and waiting for their turn) at once. */
const IN_FLIGHT = 4;

/** Whether an index's layout can drive a BlockDecoder: sizes within bounds, and a decompressor for its format. */
export function layoutProblem(h: IndexHeader, blocks: readonly number[]): string | null {
  if (h.blockSize > MAX_BLOCK_SIZE) return `its block size ${h.blockSize} is above ${MAX_BLOCK_SIZE}`;
  const limit = compressedLimit(h.blockSize);
  const big = blocks.findIndex((b) => b > limit);
  if (big >= 0) return `block ${big} is ${blocks[big]} bytes compressed, more than a block of ${h.blockSize} can be`;
  if (h.format === 'zstd' && !loadAddon<BlockAddon>('nbackup_codec')) return 'zstd blocks need the codec addon';
  return null;
}

/** Most compressed bytes a block of `blockSize` may take (stored blocks, headers and slack). */
function compressedLimit(blockSize: number): number {
  return blockSize + (blockSize >> 4) + 65536;
}

type Decode = (input: Buffer, output: Buffer, cb: (err: Error | null, n: number) => void) => void;

function decoderFor(format: ArchiveFormat, native: boolean): Decode {
  const addon = native ? loadAddon<BlockAddon>('nbackup_codec') : null;
  if (format === 'zstd') {
    if (!addon) throw new NbackupError('config', 'zstd blocks need the codec addon');
    return (i, o, cb) => addon.zstdDecompress(i, o, cb);
  }
  if (addon) return (i, o, cb) => addon.gzipDecompress(i, o, cb);
  return (input, output, cb) =>
    zlib.gunzip(input, { maxOutputLength: output.length }, (err, out) => {
      if (err) return cb(err, 0);
      out.copy(output);
      cb(null, out.length);
    });
}

interface Job {
  block: number;
  expected: number;
  output: Buffer;
  done: boolean;
  error: Error | null;
  n: number;
}

export class BlockDecoder extends Transform {
  private readonly decode: Decode;
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** Next block (position in layout.blocks) to cut. */
  private next = 0;
  private readonly queue: Job[] = [];
  /** The write callback held while IN_FLIGHT blocks are under way. */
  private waiting: TransformCallback | null = null;
  private failed = false;

  /** `native` false decompresses gzip with node:zlib, as when the addon is missing. */
  constructor(private readonly layout: BlockLayout, native = true) {
    super({ readableHighWaterMark: 1 << 20 });
    this.decode = decoderFor(layout.format, native);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.failed) return done();
    this.parts.push(chunk);
    this.partBytes += chunk.length;
    this.cut();
    const extra = this.beyondLastBlock();
    if (extra) return this.fail(extra, done);
    if (this.busy()) this.waiting = done;
    else done();
  }

  /** Every block is cut and bytes are left: the archive goes on past what its index describes. */
  private beyondLastBlock(): NbackupError | null {
    if (this.next < this.layout.blocks.length || this.partBytes === 0) return null;
    return new NbackupError('checksum', `${this.partBytes} bytes follow the last block the index describes`);
  }

  /** IN_FLIGHT blocks under way, or a complete block not cut yet: hold the writer. */
  private busy(): boolean {
    const { blocks } = this.layout;
    return this.queue.length >= IN_FLIGHT || (this.next < blocks.length && this.partBytes >= blocks[this.next]);
  }

  override _read(size: number): void {
    // The reader is taking output (read() calls this before it takes from the buffer): once it
    // has, blocks held back for it may start.
    process.nextTick(() => {
      if (!this.failed) this.emitReady();
    });
    super._read(size);
  }

  override _flush(done: TransformCallback): void {
    if (this.failed) return done();
    if (this.next < this.layout.blocks.length) {
      const missing = this.layout.firstBlock + this.next;
      return this.fail(new NbackupError('checksum', `the archive ends inside block ${missing} (${this.partBytes} of its ${this.layout.blocks[this.next]} bytes came)`), done);
    }
    if (this.queue.length === 0) return done();
    this.waiting = done;
  }

  /**
   * Starts a job for each block whose bytes are all here, at most IN_FLIGHT at once and only while
   * the reader keeps up: a chunk of many tiny blocks that each claim a whole block of output is
   * decompressed a few blocks at a time, as the output is read, not all at once.
   */
  private cut(): void {
    const { blocks } = this.layout;
    while (
      this.queue.length < IN_FLIGHT &&
      this.readableLength < this.readableHighWaterMark &&
      this.next < blocks.length &&
      this.partBytes >= blocks[this.next]
    ) {
      const input = this.takeBytes(blocks[this.next]);
      const block = this.layout.firstBlock + this.next;
      const expected = Math.min(this.layout.blockSize, this.layout.tarSize - block * this.layout.blockSize);
      // One byte more than expected, so that a block that gives too much is caught.
      const job: Job = { block, expected, output: Buffer.allocUnsafe(expected + 1), done: false, error: null, n: 0 };
      this.queue.push(job);
      this.next++;
      this.decode(input, job.output, (err, n) => {
        job.done = true;
        job.error = err;
        job.n = n;
        this.emitReady();
      });
    }
  }

  /** The first `n` buffered bytes, as one buffer (a view when they lie in one chunk). */
  private takeBytes(n: number): Buffer {
    const first = this.parts[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const p = this.parts[0];
        const k = Math.min(p.length, n - got);
        p.copy(out, got, 0, k);
        got += k;
        if (k === p.length) this.parts.shift();
        else this.parts[0] = p.subarray(k);
      }
      this.partBytes -= n;
      return out;
    }
    if (first.length === n) this.parts.shift();
    else this.parts[0] = first.subarray(n);
    this.partBytes -= n;
    return out;
  }

  /** Pushes finished blocks in order; releases the held callback once there is room. */
  private emitReady(): void {
    if (this.failed) return;
    while (this.queue.length > 0 && this.queue[0].done) {
      const job = this.queue.shift() as Job;
      if (job.error || job.n !== job.expected) {
        const why = job.error ? job.error.message : `it holds ${job.n > job.expected ? 'more than' : job.n} tar bytes, the index says ${job.expected}`;
        return this.fail(new NbackupError('checksum', `block ${job.block} of the archive does not decompress as its index says: ${why}`));
      }
      this.push(job.output.subarray(0, job.n));
    }
    this.cut();
    const cb = this.waiting;
    if (!cb) return;
    const extra = this.beyondLastBlock();
    if (extra) return this.fail(extra);
    const flushing = this.next >= this.layout.blocks.length && this.writableEnded;
    if (flushing ? this.queue.length === 0 : !this.busy()) {
      this.waiting = null;
      cb();
    }
  }

  private fail(err: Error, cb?: TransformCallback): void {
    this.failed = true;
    this.parts = [];
    const held = this.waiting;
    this.waiting = null;
    if (cb) cb(err);
    else if (held) held(err);
    else this.destroy(err);
  }
}

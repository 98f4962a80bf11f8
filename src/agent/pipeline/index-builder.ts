import { indexHead, memberLine, type IndexMember } from '../../archive/index-format.js';
import type { IndexHeader } from '../../archive/index-header.js';
import { codecFor, type BlockCodec } from './codecs.js';

/**
 * gzip level 4 (libdeflate 4, node:zlib without the addon): on the benchmark's 5.9 MB of member
 * lines 40 ms of CPU for 949 kB, where zlib level 6 took 98 ms for 919 kB.
 */
const INDEX_LEVEL = 4;

/** Member lines gathered before they are compressed (on the thread pool) as one gzip member. */
const BATCH_CHARS = 1 << 20;
/** Most memory the index may take while the backup runs (compressed parts plus text not yet compressed). */
export const MAX_INDEX_MEMORY = 64 * 1024 * 1024;

/**
 * Builds an archive's index while it is packed (format: archive/index-format.ts): the member lines
 * are compressed in batches as they come, the block sizes counted as blocks are delivered. Past
 * MAX_INDEX_MEMORY (several million files) the index is given up — the backup goes on, and a
 * restore of that archive reads it whole — and `dropped` says why.
 */
export class IndexBuilder {
  /** Member lines not yet compressed: text from `member`, before it the bytes from `lines`. */
  private batch = '';
  private readonly ready: Buffer[] = [];
  private readyBytes = 0;
  private readonly parts: Promise<Buffer>[] = [];
  private held = 0;
  private readonly blocks: number[] = [];
  members = 0;
  dropped: string | null = null;

  private readonly codec: BlockCodec = codecFor('gzip', INDEX_LEVEL);

  constructor(private readonly limit = MAX_INDEX_MEMORY) {}

  member(m: IndexMember): void {
    if (this.dropped) return;
    this.members++;
    this.batch += memberLine(m);
    if (this.batch.length + this.readyBytes >= BATCH_CHARS) this.seal();
  }

  /** Ready-made member lines (UTF-8) of `members` members, copied: the caller reuses `text`. */
  lines(text: Buffer, members: number): void {
    if (this.dropped) return;
    this.members += members;
    if (this.batch.length > 0) this.keep(Buffer.from(this.batch, 'utf8'));
    this.batch = '';
    this.keep(Buffer.from(text));
    if (this.readyBytes >= BATCH_CHARS) this.seal();
  }

  private keep(part: Buffer): void {
    this.ready.push(part);
    this.readyBytes += part.length;
  }

  /** A block was delivered: `compressed` bytes of archive. */
  block(compressed: number): void {
    this.blocks.push(compressed);
  }

  /** The index, as the gzip members to send one after the other; null when it was given up. */
  async finish(h: Omit<IndexHeader, 'nbackupIndex' | 'members' | 'blocks'>): Promise<Buffer[] | null> {
    if (!this.dropped) this.seal();
    const body = await Promise.all(this.parts);
    if (this.dropped) return null;
    return [indexHead({ nbackupIndex: 1, ...h, members: this.members, blocks: this.blocks.length }, this.blocks), ...body];
  }

  private seal(): void {
    if (this.batch.length === 0 && this.readyBytes === 0) return;
    if (this.batch.length > 0) this.keep(Buffer.from(this.batch, 'utf8'));
    const text = this.ready.length === 1 ? this.ready[0] : Buffer.concat(this.ready, this.readyBytes);
    this.batch = '';
    this.ready.length = 0;
    this.readyBytes = 0;
    this.held += text.length;
    const part = this.codec.compress(text, Buffer.allocUnsafe(this.codec.bound(text.length))).then((view) => {
      // Kept at its own size, not in the (larger) output buffer it was written into.
      const z = Buffer.from(view);
      this.held += z.length - text.length;
      if (this.held > this.limit) this.drop();
      return z;
    });
    this.parts.push(part);
    if (this.held > this.limit) this.drop();
  }

  private drop(): void {
    if (this.dropped) return;
    this.dropped = `the index of ${this.members} members outgrew ${this.limit / 1048576} MiB of memory`;
    this.batch = '';
    this.ready.length = 0;
    this.readyBytes = 0;
    // What is compressed already is let go once its job is done.
    const pending = this.parts.splice(0);
    void Promise.allSettled(pending);
  }
}

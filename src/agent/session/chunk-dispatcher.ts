import type { RingBuffer } from '../pipeline/ring-buffer.js';

/**
 * The chunks of a parallel session (protocol §3). The compressed stream in the ring buffer is cut
 * into `chunk_size` chunks numbered 0, 1, 2 …; whichever data stream has window room takes the
 * next one. A chunk stays in the ring until its ChunkSACK: the ring's tail is the lowest
 * unacknowledged chunk, so the ring bounds memory and how far the streams can drift apart. The
 * chunks of a dead stream are handed to the live streams, lowest first.
 */
export interface Chunk {
  seq: number;
  /** Offset in the compressed stream (the ring). */
  start: number;
  length: number;
}

/** A chunk on the wire of one stream: stream offsets of its header and of its end. */
export interface Sent {
  chunk: Chunk;
  start: number;
  end: number;
}

/** Cuts the ring into chunks, hands them out, and frees the ring as chunks are acknowledged. */
export class ChunkDispatcher {
  private nextSeq = 0;
  /** Every chunk below `low` is acknowledged. */
  private low = 0;
  private readonly acked = new Set<number>();
  private readonly orphans: Chunk[] = [];
  private waiters: (() => void)[] = [];
  private failure: Error | null = null;
  ackedBytes = 0;
  /** When a chunk was last acknowledged on any stream (performance.now(), not the wall clock). */
  lastProgress = performance.now();

  constructor(
    private readonly ring: RingBuffer,
    readonly chunkSize: number,
  ) {}

  /** All chunks cut, and every one acknowledged. */
  get complete(): boolean {
    return this.ring.ended && this.low * this.chunkSize >= this.ring.head && this.orphans.length === 0;
  }

  /**
   * The next chunk to send: an orphan first, else the next cut; null once everything is
   * acknowledged; undefined if `cancel` settled first (then nothing was handed out).
   */
  async take(cancel: Promise<unknown>): Promise<Chunk | null | undefined> {
    let cancelled = false;
    const stop = cancel.then(
      () => void (cancelled = true),
      () => void (cancelled = true),
    );
    for (;;) {
      if (this.failure) throw this.failure;
      if (cancelled) return undefined;
      const orphan = this.orphans.shift();
      if (orphan) return orphan;
      const start = this.nextSeq * this.chunkSize;
      const head = this.ring.head;
      if (head >= start + this.chunkSize || (this.ring.ended && head > start)) {
        return { seq: this.nextSeq++, start, length: Math.min(this.chunkSize, head - start) };
      }
      if (this.complete) return null;
      const changed = this.changed();
      await Promise.race([stop, changed, ...(this.ring.ended ? [] : [this.ring.waitForData(head)])]);
    }
  }

  /** The lowest chunk not yet acknowledged. */
  get lowest(): number {
    return this.low;
  }

  /** A dead stream's chunk, if one waits. */
  takeOrphan(): Chunk | undefined {
    return this.orphans.shift();
  }

  ack(chunk: Chunk): void {
    if (chunk.seq < this.low || this.acked.has(chunk.seq)) return;
    this.acked.add(chunk.seq);
    this.ackedBytes += chunk.length;
    this.lastProgress = performance.now();
    while (this.acked.delete(this.low)) this.low++;
    this.ring.release(Math.min(this.low * this.chunkSize, this.ring.head));
    this.wake();
  }

  /** Chunks of a dead stream: sent again, lowest first, by whichever stream asks next. */
  orphan(chunks: Chunk[]): void {
    for (const c of chunks) if (c.seq >= this.low && !this.acked.has(c.seq)) this.orphans.push(c);
    this.orphans.sort((a, b) => a.seq - b.seq);
    this.wake();
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  /** Resolves once every chunk is cut and acknowledged; rejects if the dispatcher fails first. */
  async allAcknowledged(): Promise<void> {
    while (!this.complete) {
      if (this.failure) throw this.failure;
      const changed = this.changed();
      await (this.ring.ended ? changed : Promise.race([changed, this.ring.waitForData(this.ring.head)]));
    }
  }

  /** Resolves at the next ack, orphan or failure. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }
}

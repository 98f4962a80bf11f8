import crypto from 'node:crypto';
import fs from 'node:fs';
import { NbackupError, errorMessage } from '../errors.js';
import type { SpaceClaims } from './body-receiver.js';
import type { ChunkJournal } from './chunk-journal.js';
import { readAll, writeAll } from './file-io.js';
import { openRegularFd } from './storage-entries.js';

/**
 * Reassembles the chunks of a parallel session into the temporary file, strictly in global
 * sequence order, hashing inline as it appends (the file is never re-read).
 *
 * A chunk that arrives ahead of its turn waits in memory while the waiting chunks total at most
 * `memLimit` bytes; beyond that it is appended to a staging file next to the temporary file and
 * read back when its turn comes. So memory stays bounded whatever the skew between streams, and
 * disk use is bounded by the agent's ring buffer (it cannot get further ahead than that).
 *
 * `add` resolves once the chunk is *stored*: appended to the temporary file, or written to the
 * staging file. A chunk waiting in memory is not stored until its turn comes. A chunk whose
 * sequence number was seen before (re-sent after a re-join) is a duplicate: it is dropped, and its
 * `add` resolves when the first copy is stored.
 *
 * Every file operation runs on one queue, in order, so offsets and the hash never interleave.
 */
/** How far the disk may fall behind before the streams are paused. */
const CONGESTION_BYTES = 8 * 1024 * 1024;

export interface AssemblerStats {
  chunks: number;
  duplicates: number;
  spilled: number;
  spilledBytes: number;
  peakPendingMem: number;
}

/** Which data stream a chunk came on and where in it: recorded in the journal. */
export interface ChunkOrigin {
  stream: number;
  streamStart: number;
}

/** Where a stopped server left a session's chunks (see adoption.ts). */
export interface AssemblerState {
  /** Bytes of chunks 0 .. nextSeq-1 in the temporary file, and their hash so far. */
  written: number;
  nextSeq: number;
  hash: crypto.Hash;
  /** Chunks in the staging file, waiting for their turn. */
  staged: { seq: number; length: number; at: number; origin: ChunkOrigin }[];
}

interface Waiting {
  seq: number;
  origin: ChunkOrigin;
  /** In memory, or null once spilled or written. */
  data: Buffer | null;
  /** Waiting in memory for its turn, counted in `pendingMem`. */
  inMem: boolean;
  /** Where it is in the staging file, once spilled. */
  staged: { offset: number; length: number } | null;
  /** Settles when the chunk is stored (file or staging); rejects if the assembler fails first. */
  stored: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class ChunkAssembler {
  /** Bytes appended to the temporary file. */
  written = 0;
  /** When a chunk last arrived or was appended (ms since the epoch). */
  lastActivity = Date.now();
  /** The next global sequence number the file needs. */
  nextSeq = 0;
  private hash = crypto.createHash('sha256');
  private readonly waiting = new Map<number, Waiting>();
  private pendingMem = 0;
  /** Bytes accepted by `add` and not yet stored. */
  private queuedBytes = 0;
  private drainWaiters: (() => void)[] = [];
  private stagingFd = -1;
  private stagingEnd = 0;
  private queue: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  /** Set by `seal`: the refusal every chunk not yet written gets from then on. */
  private sealed: Error | null = null;
  private failureWaiters: ((err: Error) => void)[] = [];
  /** Resolvers waiting for `written` to reach a size. */
  private sizeWaiters: { size: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  readonly stats: AssemblerStats = { chunks: 0, duplicates: 0, spilled: 0, spilledBytes: 0, peakPendingMem: 0 };

  constructor(
    private readonly fd: number,
    private readonly stagingPath: string,
    private readonly memLimit: number,
    private readonly space?: SpaceClaims,
    /** Where stored chunks are recorded before they are acknowledged (see chunk-journal.ts). */
    private readonly journal?: ChunkJournal,
  ) {}

  /** Takes up a session where a stopped server left it: file, hash and staged chunks. */
  async restore(state: AssemblerState): Promise<void> {
    this.written = state.written;
    this.nextSeq = state.nextSeq;
    this.hash = state.hash;
    if (state.staged.length === 0) return;
    this.stagingFd = await openRegularFd(this.stagingPath, fs.constants.O_RDWR);
    for (const c of state.staged) {
      const w: Waiting = { seq: c.seq, origin: c.origin, data: null, inMem: false, staged: { offset: c.at, length: c.length }, stored: Promise.resolve(), resolve: () => {}, reject: () => {} };
      this.waiting.set(c.seq, w);
      this.stagingEnd = Math.max(this.stagingEnd, c.at + c.length);
    }
    // The chunk the file needs next may be among them (staged, then the server stopped before its
    // turn was written): nothing else would start the drain, as only an arrival in turn does.
    if (this.waiting.has(this.nextSeq)) this.run(() => this.drain());
  }

  get failed(): Error | null {
    return this.failure;
  }

  /** Resolves with the error as soon as the assembler fails (never, if it does not). */
  whenFailed(): Promise<Error> {
    if (this.failure) return Promise.resolve(this.failure);
    return new Promise((resolve) => this.failureWaiters.push(resolve));
  }

  /** Bytes of chunks waiting in memory for their turn. */
  get pendingBytes(): number {
    return this.pendingMem;
  }

  /**
   * Too many bytes received but not yet stored (waiting in memory beyond the limit, or queued for
   * the disk): the streams should stop reading until `drained()`.
   */
  get congested(): boolean {
    return this.queuedBytes - this.pendingMem > CONGESTION_BYTES || this.pendingMem > this.memLimit + CONGESTION_BYTES;
  }

  /** Resolves when no longer congested (or failed). */
  drained(): Promise<void> {
    if (!this.congested || this.failure) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Accepts one chunk; resolves when it (or its first copy) is stored (and journaled). */
  add(seq: number, data: Buffer, origin: ChunkOrigin = { stream: 0, streamStart: 0 }): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    this.lastActivity = Date.now();
    if (seq < this.nextSeq) {
      this.stats.duplicates++;
      return Promise.resolve();
    }
    if (this.sealed) return Promise.reject(this.sealed);
    const dup = this.waiting.get(seq);
    if (dup) {
      this.stats.duplicates++;
      return dup.stored;
    }
    this.stats.chunks++;
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const stored = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    stored.catch(() => undefined);
    // The chunk the file needs next goes straight to the write queue; only a chunk that has to
    // wait for its turn counts against the memory limit.
    const inTurn = seq === this.nextSeq;
    const inMem = !inTurn && this.pendingMem + data.length <= this.memLimit;
    const w: Waiting = { seq, origin, data, inMem, staged: null, stored, resolve, reject };
    this.waiting.set(seq, w);
    this.queuedBytes += data.length;
    if (inMem) {
      this.pendingMem += data.length;
      this.stats.peakPendingMem = Math.max(this.stats.peakPendingMem, this.pendingMem);
    } else if (!inTurn) {
      this.stats.spilled++;
      this.stats.spilledBytes += data.length;
      this.run(() => this.spill(w));
    }
    if (seq === this.nextSeq) this.run(() => this.drain());
    return stored;
  }

  /** Where reassembly stands, for a log line when a session stalls. */
  describe(): string {
    const held = [...this.waiting.keys()].sort((a, b) => a - b);
    const shown = held.length > 6 ? `${held.slice(0, 6).join(',')},…` : held.join(',');
    return `the file waits for chunk ${this.nextSeq}; ${held.length} later chunks held (${shown}), ${this.pendingMem} bytes in memory, ${this.queuedBytes} not yet stored`;
  }

  /** Resolves once `size` bytes are in the file (or rejects if the assembler fails). */
  reach(size: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.written >= size) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.sizeWaiters.push({ size, resolve, reject }));
  }

  /**
   * The trailer's size is in the file: from now on nothing more is written to it. A chunk that is
   * not in the file yet (waiting, queued, or arriving later) is refused; one already written and
   * sent again is still a harmless duplicate. A write under way finishes: `settled()` waits for it.
   * So the hash the session is judged by, and the file it commits, never take a byte more (an agent
   * that sends past its trailer, or a stale chunk after the file was closed and its descriptor
   * number reused).
   */
  seal(): void {
    if (this.sealed || this.failure) return;
    this.sealed = new NbackupError('protocol', `chunk ${this.nextSeq} or later arrived after the trailer (the file is complete at ${this.written} bytes)`);
    for (const w of this.waiting.values()) {
      w.data = null;
      w.reject(this.sealed);
    }
    this.waiting.clear();
    this.pendingMem = 0;
    this.wakeDrained();
  }

  /** Everything queued so far has reached the disk (or failed). */
  async settled(): Promise<void> {
    await this.queue;
  }

  /** SHA-256 of the bytes appended so far. Call once, at the end. */
  digest(): Buffer {
    return this.hash.digest();
  }

  /** Closes and deletes the staging file, closes the journal, and drops every waiting chunk. */
  async dispose(): Promise<void> {
    this.fail(new NbackupError('internal', 'assembler closed'));
    await this.queue;
    await this.journal?.close();
    if (this.stagingFd >= 0) {
      const fd = this.stagingFd;
      this.stagingFd = -1;
      await fs.promises.rm(this.stagingPath, { force: true }).catch(() => undefined);
      await new Promise<void>((r) => fs.close(fd, () => r()));
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const resolve of this.failureWaiters.splice(0)) resolve(err);
    for (const w of this.waiting.values()) {
      w.data = null;
      w.reject(err);
    }
    this.waiting.clear();
    this.pendingMem = 0;
    for (const sw of this.sizeWaiters.splice(0)) sw.reject(err);
    this.wakeDrained();
  }

  private stored(w: Waiting, length: number): void {
    this.queuedBytes -= length;
    w.resolve();
    this.wakeDrained();
  }

  private wakeDrained(): void {
    if (this.congested && !this.failure) return;
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }

  private run(op: () => Promise<void>): void {
    this.queue = this.queue.then(async () => {
      if (this.failure || this.sealed) return;
      try {
        await op();
      } catch (err) {
        this.fail(err instanceof NbackupError ? err : new NbackupError('storage', `writing chunks failed: ${errorMessage(err)}`, { cause: err }));
      }
    });
    // Failures are reported through `failure`; the chain itself never rejects.
    this.queue.catch(() => undefined);
  }

  private async spill(w: Waiting): Promise<void> {
    const data = w.data;
    if (!data) return; // its turn came first: already in the file
    if (this.stagingFd < 0) this.stagingFd = await openRegularFd(this.stagingPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC);
    const offset = this.stagingEnd;
    this.stagingEnd += data.length;
    await this.claimed(data.length, () => writeAll(this.stagingFd, data, offset));
    await this.journal?.append({ seq: w.seq, length: data.length, ...w.origin, where: 'staging', at: offset });
    w.data = null;
    w.staged = { offset, length: data.length };
    this.stored(w, data.length);
  }

  /** Writes `bytes` once the storage's free space allows it. */
  private async claimed(bytes: number, write: () => Promise<void>): Promise<void> {
    await this.space?.claim(bytes);
    try {
      await write();
    } finally {
      this.space?.written(bytes);
    }
  }

  /** Appends every chunk whose turn has come, in order. */
  private async drain(): Promise<void> {
    for (;;) {
      const w = this.waiting.get(this.nextSeq);
      if (!w) break;
      let data = w.data;
      const wasStaged = w.staged !== null;
      if (!data) {
        if (!w.staged) throw new NbackupError('internal', `chunk ${this.nextSeq} is neither in memory nor staged`);
        data = Buffer.allocUnsafe(w.staged.length);
        await readAll(this.stagingFd, data, w.staged.offset);
      }
      if (w.inMem) this.pendingMem -= data.length;
      w.inMem = false;
      w.data = null;
      const chunk = data;
      await this.claimed(chunk.length, () => writeAll(this.fd, chunk, this.written));
      await this.journal?.append({ seq: this.nextSeq, length: chunk.length, ...w.origin, where: 'file', at: this.written });
      this.hash.update(data);
      this.written += data.length;
      this.lastActivity = Date.now();
      this.waiting.delete(this.nextSeq);
      this.nextSeq++;
      // A staged chunk was stored (and acknowledged) already; a spill still queued finds no data.
      if (!wasStaged) this.stored(w, data.length);
      if (this.waiting.size === 0 && this.stagingFd >= 0 && this.stagingEnd > 0) {
        // Nothing staged is waiting any more: reuse the staging space from the start.
        this.stagingEnd = 0;
        await new Promise<void>((resolve, reject) => fs.ftruncate(this.stagingFd, 0, (e) => (e ? reject(e) : resolve())));
      }
    }
    this.sizeWaiters = this.sizeWaiters.filter((sw) => {
      if (this.written < sw.size) return true;
      sw.resolve();
      return false;
    });
  }
}

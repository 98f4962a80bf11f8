import crypto from 'node:crypto';
import fs from 'node:fs';
import { TRAILER_SIZE } from '../../protocol/constants.js';
import { decodeTrailer, type Trailer } from '../../protocol/frames.js';
import { NbackupError, errorMessage } from '../errors.js';
import { hashPrefix, readAll, writevAll } from './file-io.js';
import { judge, type Verdict } from './verdict.js';

/**
 * The body of a single-stream session: raw compressed bytes followed by the 44-byte trailer, with
 * no length up front. Every byte goes to the temporary file as it arrives; SHA-256 runs inline on
 * all but the last 44 bytes seen so far (the possible trailer), so the data is verified without
 * reading the file back. At EOF those 44 bytes are the trailer and the file is cut before them.
 *
 * The receiver outlives a connection: a resumed session attaches a new socket and appends from
 * `written`, with the hash state and held-back bytes exactly as they were.
 *
 * Write-behind: every WRITE_BEHIND bytes the file is fdatasync'ed in the background (one at a
 * time, never holding up the writes), so the disk writes back during the transfer and the
 * commit's fsync has only the tail to wait for. A failed fdatasync fails the session: a later
 * fsync may no longer report the lost write-back.
 */
export interface BodyReceiverEvents {
  /** Called after each write with the total bytes now in the file. */
  onWritten?: (written: number) => void;
}

/** Free space to draw from before each write (the storage's SpaceGuard). */
export interface SpaceClaims {
  claim(bytes: number): Promise<void>;
  written(bytes: number): void;
}

const HIGH_WATER = 4 * 1024 * 1024;
const MAX_WRITE_BATCH = 64;
const WRITE_BEHIND = 32 * 1024 * 1024;

export class BodyReceiver {
  private hash = crypto.createHash('sha256');
  private holdback: Buffer = Buffer.alloc(0);
  private queue: Buffer[] = [];
  private queued = 0;
  private writing = false;
  private failure: Error | null = null;
  private idleWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  private failureWaiters: ((err: Error) => void)[] = [];
  /** Bytes handed to the file (write(2) returned). */
  written = 0;
  /** Bytes a background fdatasync has made durable, and the one under way. */
  private syncedTo = 0;
  private syncing: Promise<void> | null = null;
  /** Bytes accepted from the network: written + queued. */
  received = 0;

  constructor(
    readonly fd: number,
    private events: BodyReceiverEvents = {},
    private readonly space?: SpaceClaims,
  ) {}

  /**
   * A receiver for a temporary file left by a server that stopped (re-adopting its session): the
   * file's `size` bytes are taken as received, the hash is rebuilt by reading them once, and the
   * last 44 (the possible start of a trailer) are held back again.
   */
  static async adopt(fd: number, size: number, space?: SpaceClaims): Promise<BodyReceiver> {
    const r = new BodyReceiver(fd, {}, space);
    const held = Math.min(TRAILER_SIZE, size);
    r.hash = await hashPrefix(fd, size - held);
    r.holdback = Buffer.alloc(held);
    await readAll(fd, r.holdback, size - held);
    r.written = size;
    r.received = size;
    return r;
  }

  /** Who hears about writes: the connection currently feeding the session. */
  setOnWritten(fn: ((written: number) => void) | undefined): void {
    this.events = { onWritten: fn };
  }

  /** Bytes a background fdatasync has made durable (write-behind). */
  get durable(): number {
    return this.syncedTo;
  }

  get failed(): Error | null {
    return this.failure;
  }

  /** Resolves with the error as soon as a write fails (never, if none does). */
  whenFailed(): Promise<Error> {
    if (this.failure) return Promise.resolve(this.failure);
    return new Promise((resolve) => this.failureWaiters.push(resolve));
  }

  /** True while more than the high-water mark waits to be written: pause the socket. */
  get congested(): boolean {
    return this.queued >= HIGH_WATER;
  }

  /** Accepts bytes in arrival order. Never copies more than the 44 held-back bytes. */
  push(chunk: Buffer): void {
    if (this.failure) return;
    if (chunk.length === 0) return;
    this.received += chunk.length;
    this.hashWithHoldback(chunk);
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (!this.writing) void this.drainQueue();
  }

  /** Resolves when the queue is below the high-water mark again. */
  async drained(): Promise<void> {
    while (this.congested && !this.failure) await new Promise<void>((r) => this.drainWaiters.push(r));
  }

  /** Resolves when everything pushed is in the file (and no fdatasync is under way); rejects if a write failed. */
  async flushed(): Promise<void> {
    while ((this.writing || this.queue.length > 0) && !this.failure) {
      await new Promise<void>((r) => this.idleWaiters.push(r));
    }
    while (this.syncing) await this.syncing;
    if (this.failure) throw this.failure;
  }

  /**
   * Whether the stream so far ends in something shaped like a trailer. A connection that ends
   * without one was cut (a TCP reset can surface as EOF), not finished: the session waits for a
   * RESUME instead of being judged.
   */
  endsWithTrailer(): boolean {
    return this.holdback.length === TRAILER_SIZE && this.holdback.subarray(0, 4).toString('latin1') === 'DONE';
  }

  /**
   * After EOF: the held-back bytes must be a trailer for exactly the data before it, with its
   * SHA-256. Returns the verdict; the caller commits or discards.
   */
  verify(): Verdict {
    if (this.received < TRAILER_SIZE || this.holdback.length !== TRAILER_SIZE) {
      return { ok: false, reason: `stream ended after ${this.received} bytes, before a complete trailer` };
    }
    let trailer: Trailer;
    try {
      const decoded = decodeTrailer(this.holdback);
      if (!decoded) return { ok: false, reason: 'incomplete trailer' };
      trailer = decoded.value;
    } catch (err) {
      return { ok: false, reason: `malformed trailer: ${errorMessage(err)}` };
    }
    return judge(trailer, this.received - TRAILER_SIZE, this.hash.copy().digest());
  }

  private hashWithHoldback(chunk: Buffer): void {
    const total = this.holdback.length + chunk.length;
    if (total <= TRAILER_SIZE) {
      this.holdback = Buffer.concat([this.holdback, chunk]);
      return;
    }
    const toHash = total - TRAILER_SIZE;
    if (toHash >= this.holdback.length) {
      if (this.holdback.length > 0) this.hash.update(this.holdback);
      this.hash.update(chunk.subarray(0, toHash - this.holdback.length));
      this.holdback = Buffer.from(chunk.subarray(chunk.length - TRAILER_SIZE));
    } else {
      this.hash.update(this.holdback.subarray(0, toHash));
      this.holdback = Buffer.concat([this.holdback.subarray(toHash), chunk]);
    }
  }

  private async drainQueue(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0 && !this.failure) {
        const batch = this.queue.splice(0, MAX_WRITE_BATCH);
        let bytes = 0;
        for (const b of batch) bytes += b.length;
        await this.space?.claim(bytes);
        try {
          await writevAll(this.fd, batch, this.written);
        } finally {
          this.space?.written(bytes);
        }
        this.queued -= bytes;
        this.written += bytes;
        this.events.onWritten?.(this.written);
        if (!this.congested) wakeAll(this.drainWaiters);
        this.writeBehind();
      }
    } catch (err) {
      this.fail(err instanceof NbackupError ? err : new NbackupError('storage', `write to temporary file failed: ${errorMessage(err)}`, { cause: err }));
    } finally {
      this.writing = false;
      wakeAll(this.drainWaiters);
      wakeAll(this.idleWaiters);
    }
  }

  private writeBehind(): void {
    if (this.syncing || this.written - this.syncedTo < WRITE_BEHIND) return;
    const upTo = this.written;
    this.syncing = new Promise<void>((resolve) =>
      fs.fdatasync(this.fd, (err) => {
        this.syncing = null;
        if (err) this.fail(new NbackupError('storage', `fdatasync of the temporary file failed: ${err.message}`, { cause: err }));
        else this.syncedTo = upTo;
        resolve();
      }),
    );
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const resolve of this.failureWaiters.splice(0)) resolve(err);
  }
}

function wakeAll(list: (() => void)[]): void {
  for (const resolve of list.splice(0)) resolve();
}

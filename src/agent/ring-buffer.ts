import { NbackupError } from '../errors.js';

/**
 * A fixed-capacity byte ring addressed by absolute stream offset, between the compressor and the
 * sender. The compressor writes at the head and waits when the ring is full (backpressure); the
 * sender reads from any offset still held; a SACK from the server releases everything before an
 * offset, moving the tail. After a reconnect the sender simply reads again from the server's
 * offset, as long as it has not been released.
 *
 * The memory is allocated once, up front; pages become resident only as the ring fills.
 */
export class RingBuffer {
  private readonly buf: Buffer;
  private _head = 0;
  private _tail = 0;
  private _ended = false;
  private failure: Error | null = null;
  private spaceWaiters: (() => void)[] = [];
  private dataWaiters: (() => void)[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
    this.buf = Buffer.allocUnsafeSlow(capacity);
  }

  /** Offset one past the last byte written. */
  get head(): number {
    return this._head;
  }
  /** Oldest offset still held (everything before it was released). */
  get tail(): number {
    return this._tail;
  }
  get used(): number {
    return this._head - this._tail;
  }
  get free(): number {
    return this.capacity - this.used;
  }
  /** True once `end()` was called: the head will not move again. */
  get ended(): boolean {
    return this._ended;
  }

  /** Copies `data` in at the head, waiting for space as needed. */
  async write(data: Buffer): Promise<void> {
    if (this._ended) throw new NbackupError('internal', 'write to a ring buffer after end()');
    let off = 0;
    while (off < data.length) {
      if (this.failure) throw this.failure;
      if (this.free === 0) {
        await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
        continue;
      }
      const at = this._head % this.capacity;
      const n = Math.min(data.length - off, this.free, this.capacity - at);
      data.copy(this.buf, at, off, off + n);
      off += n;
      this._head += n;
      this.wake('data');
    }
  }

  /**
   * A view of up to `max` bytes starting at `offset`, contiguous in memory (so it may be shorter
   * than what is available when the data wraps). Empty when `offset` is the head.
   */
  read(offset: number, max: number): Buffer {
    if (offset < this._tail) {
      throw new NbackupError('internal', `offset ${offset} was already released from the ring buffer (tail is ${this._tail})`);
    }
    if (offset > this._head) throw new NbackupError('internal', `offset ${offset} is beyond the ring buffer head ${this._head}`);
    const at = offset % this.capacity;
    const n = Math.min(max, this._head - offset, this.capacity - at);
    return this.buf.subarray(at, at + n);
  }

  /** Whether `offset` can still be read (it lies between tail and head). */
  holds(offset: number): boolean {
    return offset >= this._tail && offset <= this._head;
  }

  /** Frees everything before `offset`. Offsets behind the tail are ignored; beyond the head is an error. */
  release(offset: number): void {
    if (offset > this._head) throw new NbackupError('protocol', `acknowledged offset ${offset} is beyond what was sent (${this._head})`);
    if (offset <= this._tail) return;
    this._tail = offset;
    this.wake('space');
  }

  /** Resolves when data beyond `offset` exists, or the ring has ended or failed. */
  async waitForData(offset: number): Promise<void> {
    while (this._head <= offset && !this._ended && !this.failure) {
      await new Promise<void>((resolve) => this.dataWaiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  /** Marks the end of the stream: no more writes. */
  end(): void {
    this._ended = true;
    this.wake('data');
  }

  /** Makes every waiting and future write or wait reject with `err`. */
  fail(err: Error): void {
    if (!this.failure) this.failure = err;
    this.wake('data');
    this.wake('space');
  }

  private wake(which: 'data' | 'space'): void {
    const list = which === 'data' ? this.dataWaiters : this.spaceWaiters;
    if (list.length === 0) return;
    if (which === 'data') this.dataWaiters = [];
    else this.spaceWaiters = [];
    for (const resolve of list) resolve();
  }
}

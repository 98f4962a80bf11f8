import { NbackupError } from '../../errors.js';

/**
 * A fixed-capacity byte ring addressed by absolute stream offset, between the compressor and the
 * sender. The compressor writes at the head and waits when the ring is full (backpressure); the
 * sender reads from any offset still held; a SACK from the server releases everything before an
 * offset, moving the tail. After a reconnect the sender simply reads again from the server's
 * offset, as long as it has not been released.
 *
 * Offset `o` lives at position `o % capacity`. The positions are backed by segments allocated on
 * first use and dropped once the tail has passed them, so resident memory follows what is really
 * unacknowledged (a few MiB on a healthy link) rather than the configured capacity.
 */
const DEFAULT_SEGMENT = 1024 * 1024;
const SPARE_SEGMENTS = 4;

export class RingBuffer {
  private readonly segments: (Buffer | null)[];
  private readonly spare: Buffer[] = [];
  private _head = 0;
  private _tail = 0;
  private _ended = false;
  private failure: Error | null = null;
  private spaceWaiters: (() => void)[] = [];
  private dataWaiters: (() => void)[] = [];

  constructor(
    readonly capacity: number,
    private readonly segmentSize = Math.min(DEFAULT_SEGMENT, capacity),
  ) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
    if (!Number.isInteger(segmentSize) || segmentSize <= 0) throw new RangeError(`segment size must be a positive integer, got ${segmentSize}`);
    this.segments = new Array<Buffer | null>(Math.ceil(capacity / segmentSize)).fill(null);
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
  /** Bytes of segment memory currently allocated. */
  get allocated(): number {
    let n = 0;
    for (const s of this.segments) if (s) n += s.length;
    return n;
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
      const { seg, at, room } = this.locate(this._head, true);
      const n = Math.min(data.length - off, this.free, room);
      data.copy(seg, at, off, off + n);
      off += n;
      this._head += n;
      this.wake('data');
    }
  }

  /**
   * A view of up to `max` bytes starting at `offset`, contiguous in memory (so it may be shorter
   * than what is available at a segment or wrap boundary). Empty when `offset` is the head.
   */
  read(offset: number, max: number): Buffer {
    if (offset < this._tail) {
      throw new NbackupError('internal', `offset ${offset} was already released from the ring buffer (tail is ${this._tail})`);
    }
    if (offset > this._head) throw new NbackupError('internal', `offset ${offset} is beyond the ring buffer head ${this._head}`);
    if (offset === this._head) return Buffer.alloc(0);
    const { seg, at, room } = this.locate(offset, false);
    const n = Math.min(max, this._head - offset, room);
    return seg.subarray(at, at + n);
  }

  /** Whether `offset` can still be read (it lies between tail and head). */
  holds(offset: number): boolean {
    return offset >= this._tail && offset <= this._head;
  }

  /** Frees everything before `offset`. Offsets behind the tail are ignored; beyond the head is an error. */
  release(offset: number): void {
    if (offset > this._head) throw new NbackupError('protocol', `acknowledged offset ${offset} is beyond what was sent (${this._head})`);
    if (offset <= this._tail) return;
    const oldTail = this._tail;
    this._tail = offset;
    this.dropReleased(oldTail, offset);
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

  /**
   * Stream segment number `n` (offset / segmentSize) covers ring positions that depend on where
   * the capacity wraps; we index segments by position so a wrap reuses the same slots.
   */
  private locate(offset: number, allocate: boolean): { seg: Buffer; at: number; room: number } {
    const pos = offset % this.capacity;
    const index = Math.floor(pos / this.segmentSize);
    const segStart = index * this.segmentSize;
    const segLen = Math.min(this.segmentSize, this.capacity - segStart);
    let seg = this.segments[index];
    if (!seg) {
      if (!allocate) throw new NbackupError('internal', `ring buffer segment for offset ${offset} is not allocated`);
      seg = this.spare.pop() ?? Buffer.allocUnsafeSlow(this.segmentSize);
      this.segments[index] = seg;
    }
    const at = pos - segStart;
    return { seg, at, room: segLen - at };
  }

  /** Drops the slots the released range [from, to) touched, unless live bytes remain in them. */
  private dropReleased(from: number, to: number): void {
    const S = this.segmentSize;
    const slots = this.segments.length;
    const span = Math.min(to - from, this.capacity);
    const first = Math.floor((from % this.capacity) / S);
    const count = Math.min(slots, Math.floor(((from % this.capacity) + span - 1) / S) - first + 1);
    for (let k = 0; k < count; k++) {
      const index = (first + k) % slots;
      if (this.segments[index] && !this.slotIsLive(index)) {
        const seg = this.segments[index]!;
        this.segments[index] = null;
        if (this.spare.length < SPARE_SEGMENTS && seg.length === S) this.spare.push(seg);
      }
    }
  }

  /** Whether any offset in [tail, head) maps into slot `index`. */
  private slotIsLive(index: number): boolean {
    const used = this._head - this._tail;
    if (used === 0) return false;
    const lo = index * this.segmentSize;
    const hi = Math.min(lo + this.segmentSize, this.capacity);
    const a = this._tail % this.capacity;
    const b = a + used; // may exceed capacity: then the live range wraps to [0, b - capacity)
    const overlaps = (x: number, y: number): boolean => x < hi && lo < y;
    return overlaps(a, Math.min(b, this.capacity)) || (b > this.capacity && overlaps(0, b - this.capacity));
  }

  private wake(which: 'data' | 'space'): void {
    const list = which === 'data' ? this.dataWaiters : this.spaceWaiters;
    if (list.length === 0) return;
    if (which === 'data') this.dataWaiters = [];
    else this.spaceWaiters = [];
    for (const resolve of list) resolve();
  }
}

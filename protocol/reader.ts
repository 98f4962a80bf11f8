/**
 * FrameReader: feed it socket data in whatever pieces it arrives, read whole frames out of it.
 *
 * Bytes live in one contiguous buffer that grows by doubling, so a decoder always sees a single
 * Buffer without re-concatenating everything on each attempt (pushing n bytes costs O(n) overall).
 * Bytes already handed out (by take/takeAll) are never overwritten: when the buffer must grow or
 * empties, a new one is allocated instead of reusing the old one in place.
 */
import { ProtocolError } from './errors.js';
import type { Decoded } from './frames.js';

export const DEFAULT_MAX_BUFFERED = 64 * 1024;

export interface FrameReaderOptions {
  /**
   * Most bytes that may sit in the reader while a decoder still says "need more". A peer that
   * sends more than this without completing a frame gets ProtocolError 'oversized'.
   */
  maxBuffered?: number;
}

const EMPTY = Buffer.alloc(0);
const MIN_CAPACITY = 4096;

export class FrameReader {
  readonly maxBuffered: number;
  private buf: Buffer = EMPTY;
  private start = 0;
  private end = 0;
  /** buf is a caller's chunk kept by reference: never write into it. */
  private borrowed = false;

  constructor(options: FrameReaderOptions = {}) {
    const max = options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`FrameReader maxBuffered must be a positive integer, got ${max}`);
    }
    this.maxBuffered = max;
  }

  /** Bytes pushed and not yet consumed. */
  get buffered(): number {
    return this.end - this.start;
  }

  /**
   * Add bytes from the socket. The reader may keep a reference to `chunk` instead of copying it,
   * so the caller must not modify it afterwards (socket chunks never are).
   */
  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.buffered === 0) {
      // Nothing pending: keep the chunk itself. The common case of a whole frame in one chunk
      // then costs no copy at all.
      this.buf = chunk;
      this.start = 0;
      this.end = n;
      this.borrowed = true;
      return;
    }
    if (this.borrowed || this.buf.length - this.end < n) {
      const pending = this.buffered;
      const capacity = Math.max(MIN_CAPACITY, 2 * (pending + n));
      const next = Buffer.allocUnsafe(capacity);
      this.buf.copy(next, 0, this.start, this.end);
      this.buf = next;
      this.start = 0;
      this.end = pending;
      this.borrowed = false;
    }
    chunk.copy(this.buf, this.end);
    this.end += n;
  }

  /**
   * Decode one frame from the buffered bytes. On success the frame's bytes are consumed and its
   * value returned; null means the decoder needs more bytes (push more and call again). A
   * decoder's ProtocolError propagates and leaves the reader unchanged. Throws 'oversized' when
   * more than maxBuffered bytes are waiting and the decoder still wants more.
   */
  read<T>(decode: (b: Buffer) => Decoded<T> | null): T | null {
    const view = this.buf.subarray(this.start, this.end);
    const d = decode(view);
    if (d === null) {
      if (view.length > this.maxBuffered) {
        throw new ProtocolError(
          'oversized',
          `${view.length} bytes buffered without a complete frame (limit ${this.maxBuffered})`,
        );
      }
      return null;
    }
    if (!Number.isSafeInteger(d.size) || d.size < 0 || d.size > view.length) {
      throw new RangeError(`decoder reported size ${d.size} with ${view.length} bytes available`);
    }
    this.consume(d.size);
    return d.value;
  }

  /**
   * Look at the buffered bytes without consuming them, e.g. `reader.peek(decodeConnectionKind)`.
   * Same 'oversized' rule as read() when `inspect` returns null.
   */
  peek<T>(inspect: (b: Buffer) => T | null): T | null {
    const view = this.buf.subarray(this.start, this.end);
    const v = inspect(view);
    if (v === null && view.length > this.maxBuffered) {
      throw new ProtocolError('oversized', `${view.length} bytes buffered without a complete frame (limit ${this.maxBuffered})`);
    }
    return v;
  }

  /**
   * Up to `max` raw bytes (all of them if max is omitted), consumed; null when nothing is
   * buffered. For chunk payloads: read a ChunkHeader, then take(length - got) until done.
   */
  take(max = Infinity): Buffer | null {
    const n = Math.min(Math.floor(max), this.buffered);
    if (!(n > 0)) return null;
    const out = this.buf.subarray(this.start, this.start + n);
    this.consume(n);
    return out;
  }

  /** Everything buffered, raw, consumed (possibly empty): hand the rest to a body phase. */
  takeAll(): Buffer {
    return this.take() ?? EMPTY;
  }

  /** For EOF: throws 'truncated' if a partial frame is still buffered. */
  assertDrained(what = 'frame'): void {
    if (this.buffered > 0) {
      throw new ProtocolError('truncated', `connection ended in the middle of a ${what} (${this.buffered} bytes left)`);
    }
  }

  private consume(n: number): void {
    this.start += n;
    if (this.start === this.end) {
      // Drop rather than rewind: callers may still hold views of these bytes.
      this.buf = EMPTY;
      this.start = 0;
      this.end = 0;
      this.borrowed = false;
    }
  }
}

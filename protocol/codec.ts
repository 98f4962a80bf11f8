/**
 * The machinery every frame module shares: a bounds-checked Parser for decoders (a short buffer
 * means "need more", never an error) and value checks for encoders (they throw ProtocolError
 * rather than put something on the wire the peer would have to reject).
 */
import { MAGIC_SIZE, MAX_LINE_BYTES, type Magic, MagicBytes, type StatusTable, isStatus } from './constants.js';
import { ProtocolError, type ProtocolErrorCode } from './errors.js';

/** A decoded frame and how many bytes it took from the start of the buffer. */
export type Decoded<T> = { value: T; size: number };
/** Any decodeX function. */
export type Decoder<T> = (buf: Buffer) => Decoded<T> | null;

// ─── Decoding ─────────────────────────────────────────────────────────────────────────────────

/** Thrown inside a decoder body when the buffer ends early; never escapes this module. */
const NEED_MORE: unique symbol = Symbol('need more bytes');

// ignoreBOM: a leading U+FEFF must stay in the name, not be silently stripped by the decoder.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function describeBytes(b: Buffer): string {
  const hex = b.toString('hex').replace(/(..)(?!$)/g, '$1 ');
  const printable = b.every((c) => c >= 0x20 && c < 0x7f);
  return printable ? `"${b.toString('latin1')}" (${hex})` : `0x${hex}`;
}

export function hexByte(n: number): string {
  return `0x${n.toString(16).padStart(2, '0')}`;
}

export class Parser {
  pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly frame: string,
  ) {}

  fail(code: ProtocolErrorCode, what: string, options?: { cause?: unknown }): ProtocolError {
    return new ProtocolError(code, `${this.frame}: ${what}`, options);
  }

  private need(n: number): number {
    if (this.buf.length - this.pos < n) throw NEED_MORE;
    const at = this.pos;
    this.pos += n;
    return at;
  }

  magic(expected: Magic): void {
    this.magicOf([expected]);
  }

  magicOf<M extends Magic>(allowed: readonly M[]): M {
    const b = this.buf;
    const at = this.pos;
    if (b.length - at < MAGIC_SIZE) throw NEED_MORE;
    for (const m of allowed) {
      const mb = MagicBytes[m];
      if (b[at] === mb[0] && b[at + 1] === mb[1] && b[at + 2] === mb[2] && b[at + 3] === mb[3]) {
        this.pos += MAGIC_SIZE;
        return m;
      }
    }
    const want = allowed.map((m) => `"${m}"`).join(', ');
    const got = describeBytes(b.subarray(at, at + MAGIC_SIZE));
    throw this.fail('bad-magic', `expected magic ${allowed.length > 1 ? `one of ${want}` : want}, got ${got}`);
  }

  peekU8(): number {
    if (this.buf.length - this.pos < 1) throw NEED_MORE;
    return this.buf[this.pos];
  }

  u8(): number {
    return this.buf[this.need(1)];
  }

  u32(): number {
    return this.buf.readUInt32BE(this.need(4));
  }

  u64(field: string): number {
    const at = this.need(8);
    const hi = this.buf.readUInt32BE(at);
    const lo = this.buf.readUInt32BE(at + 4);
    // 2^53-1 is 0x001fffff_ffffffff: anything with more in the high word is not a safe integer.
    if (hi > 0x1fffff) {
      const v = this.buf.readBigUInt64BE(at);
      throw this.fail('bad-value', `${field} ${v} is larger than ${Number.MAX_SAFE_INTEGER} (2^53-1)`);
    }
    return hi * 0x1_0000_0000 + lo;
  }

  i64(): bigint {
    return this.buf.readBigInt64BE(this.need(8));
  }

  f32(field: string): number {
    const v = this.buf.readFloatBE(this.need(4));
    if (!Number.isFinite(v)) throw this.fail('bad-value', `${field} is ${v}, not a finite number`);
    return v;
  }

  bytes(n: number): Buffer {
    const at = this.need(n);
    return Buffer.from(this.buf.subarray(at, at + n));
  }

  status<T extends StatusTable>(table: T, field: string): T[keyof T] {
    const v = this.u8();
    if (!isStatus(table, v)) throw this.fail('bad-status', `unknown ${field} ${hexByte(v)}`);
    return v;
  }

  /** A `\n`-terminated UTF-8 line of at most MAX_LINE_BYTES content bytes. */
  line(field: string): string {
    const start = this.pos;
    const window = this.buf.subarray(start, start + MAX_LINE_BYTES + 1);
    const nl = window.indexOf(0x0a);
    if (nl < 0) {
      if (window.length > MAX_LINE_BYTES) {
        throw this.fail(
          'line-too-long',
          `${field} line is longer than ${MAX_LINE_BYTES} bytes (no "\\n" within the first ${MAX_LINE_BYTES + 1})`,
        );
      }
      throw NEED_MORE;
    }
    let text: string;
    try {
      text = utf8.decode(window.subarray(0, nl));
    } catch (cause) {
      throw this.fail('bad-utf8', `${field} line is not valid UTF-8`, { cause });
    }
    this.pos = start + nl + 1;
    return text;
  }
}

export function parse<T>(buf: Buffer, frame: string, body: (p: Parser) => T): Decoded<T> | null {
  const p = new Parser(buf, frame);
  try {
    const value = body(p);
    return { value, size: p.pos };
  } catch (err) {
    if (err === NEED_MORE) return null;
    throw err;
  }
}

// ─── Encoding ─────────────────────────────────────────────────────────────────────────────────

export function invalid(frame: string, code: ProtocolErrorCode, what: string): ProtocolError {
  return new ProtocolError(code, `cannot encode ${frame}: ${what}`);
}

function uint(frame: string, field: string, v: unknown, max: number, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw invalid(frame, 'bad-value', `${field} must be an integer in ${min}..${max}, got ${String(v)}`);
  }
  return v;
}
export const u8 = (frame: string, field: string, v: unknown, min = 0) => uint(frame, field, v, 0xff, min);
export const u32 = (frame: string, field: string, v: unknown, min = 0) => uint(frame, field, v, 0xffff_ffff, min);
export const u64 = (frame: string, field: string, v: unknown) => uint(frame, field, v, Number.MAX_SAFE_INTEGER);

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
export function i64(frame: string, field: string, v: unknown): bigint {
  if (typeof v !== 'bigint' || v < I64_MIN || v > I64_MAX) {
    throw invalid(frame, 'bad-value', `${field} must be a bigint in the i64 range, got ${String(v)}`);
  }
  return v;
}

export function f32(frame: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(Math.fround(v))) {
    throw invalid(frame, 'bad-value', `${field} must be a finite 32-bit float, got ${String(v)}`);
  }
  return v;
}

export function status<T extends StatusTable>(frame: string, table: T, field: string, v: unknown): number {
  if (typeof v !== 'number' || !isStatus(table, v)) {
    throw invalid(frame, 'bad-status', `unknown ${field} ${String(v)}`);
  }
  return v;
}

// A lone surrogate in a JS string has no UTF-8 form; Buffer.from would silently write U+FFFD.
const LONE_SURROGATE = /\p{Cs}/u;

export function line(frame: string, field: string, v: unknown): Buffer {
  if (typeof v !== 'string') throw invalid(frame, 'bad-value', `${field} must be a string, got ${typeof v}`);
  if (v.includes('\n')) throw invalid(frame, 'bad-value', `${field} may not contain "\\n"`);
  if (LONE_SURROGATE.test(v)) throw invalid(frame, 'bad-utf8', `${field} contains a lone UTF-16 surrogate`);
  const bytes = Buffer.from(v + '\n', 'utf8');
  if (bytes.length - 1 > MAX_LINE_BYTES) {
    throw invalid(frame, 'line-too-long', `${field} is ${bytes.length - 1} bytes, more than ${MAX_LINE_BYTES}`);
  }
  return bytes;
}

/**
 * A free-text line (a refusal's message, an abort's reason): it may quote what a peer sent, so it
 * is made to fit rather than refused: newlines become spaces, a lone surrogate U+FFFD, and a text
 * over MAX_LINE_BYTES is cut at a character boundary and ends in "...". A peer that sent a
 * 500-byte value still hears why it was refused.
 */
export function messageLine(frame: string, field: string, v: unknown): Buffer {
  if (typeof v !== 'string') throw invalid(frame, 'bad-value', `${field} must be a string, got ${typeof v}`);
  const text = v.replace(/[\r\n]/g, ' ').replace(/\p{Cs}/gu, '\uFFFD');
  let bytes = Buffer.from(text, 'utf8');
  if (bytes.length > MAX_LINE_BYTES) {
    let end = MAX_LINE_BYTES - 3;
    while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // not inside a UTF-8 sequence
    bytes = Buffer.concat([bytes.subarray(0, end), Buffer.from('...')]);
  }
  return Buffer.concat([bytes, Buffer.from('\n')]);
}

/** A zeroed buffer of `size` bytes with `magic` in its first 4. */
export function withMagic(size: number, magic: Magic): Buffer {
  const b = Buffer.alloc(size);
  MagicBytes[magic].copy(b, 0);
  return b;
}

export function writeU64(b: Buffer, v: number, at: number): void {
  b.writeBigUInt64BE(BigInt(v), at);
}


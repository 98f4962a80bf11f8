/**
 * Every NBKP frame as a pure pair of functions: `encodeX(value) → Buffer` and
 * `decodeX(buf) → { value, size } | null`. No I/O here; FrameReader (reader.ts) feeds decoders
 * from a socket.
 *
 * Decoder contract:
 *   - `buf` holds bytes from the start of the frame; anything after the frame is left alone and
 *     `size` says how many bytes the frame took.
 *   - `null` means "not enough bytes yet". A prefix of a valid frame always gives null.
 *   - Malformed input throws ProtocolError as soon as the bytes that prove it are present
 *     (a wrong magic once 4 bytes are there, a line once 513 bytes came without `\n`, …).
 *   - Decoded values never alias `buf` (byte fields are copied).
 * Encoders validate their input and throw ProtocolError rather than put something on the wire
 * the peer would have to reject.
 */
import {
  AbortReason,
  AckStatus,
  CHUNK_HEADER_SIZE,
  CHUNK_SACK_SIZE,
  CONNECTION_KINDS,
  CONTROL_DEFER_SIZE,
  CONTROL_OPEN_SIZE,
  CONTROL_PING_SIZE,
  CONTROL_PONG_SIZE,
  CONTROL_ROTATE_SIZE,
  type ConnectionKind,
  FinalStatus,
  HEALTH_PONG_SIZE,
  HealthStatus,
  MAGIC_SIZE,
  MAX_LINE_BYTES,
  Magic,
  MagicBytes,
  PARALLEL_ACK_SIZE,
  PARALLEL_INIT_SIZE,
  PROTOCOL_VERSION,
  ParallelStatus,
  RESUME_ACK_SIZE,
  ResumeStatus,
  SACK_SIZE,
  type StatusTable,
  TRAILER_SIZE,
  isStatus,
} from './constants.js';
import { ProtocolError, type ProtocolErrorCode } from './errors.js';

// ─── Types ────────────────────────────────────────────────────────────────────────────────────

/** A decoded frame and how many bytes it took from the start of the buffer. */
export type Decoded<T> = { value: T; size: number };
/** Any decodeX function. */
export type Decoder<T> = (buf: Buffer) => Decoded<T> | null;

/** `NBKP` ver agent\n storage\n backup\n — client opens a backup session. */
export interface Handshake {
  version: number;
  agent: string;
  storage: string;
  backup: string;
}
/** status · message\n · sessionId\n — server answers the handshake. */
export interface Ack {
  status: AckStatus;
  message: string;
  sessionId: string;
}
/** Mode byte 0x00 after ACK GO: one stream carries the body. */
export interface SingleMode {
  kind: 'single';
}
/** maxStreams u8 (1..255, doubles as the mode byte) · chunkSize u32. */
export interface ParallelInit {
  maxStreams: number;
  chunkSize: number;
}
export type Mode = SingleMode | ({ kind: 'parallel' } & ParallelInit);
/** `SACK` u64 offset — body bytes the server has written. */
export interface Sack {
  offset: number;
}
/** `DONE` sha256[32] u64 size — after the body (single) or on the primary (parallel). */
export interface Trailer {
  sha256: Buffer;
  size: number;
}
export interface FinalAck {
  status: FinalStatus;
}
/** `RSME` ver sessionId\n agent\n storage\n. */
export interface Resume {
  version: number;
  sessionId: string;
  agent: string;
  storage: string;
}
export interface ResumeAck {
  status: ResumeStatus;
  lastOffset: number;
}
/** `PJIN` ver sessionId\n streamIndex u8. */
export interface ParallelJoin {
  version: number;
  sessionId: string;
  streamIndex: number;
}
export interface ParallelAck {
  status: ParallelStatus;
  lastOffset: number;
}
/** u32 globalSeq · u32 length, followed by `length` payload bytes (not part of the frame). */
export interface ChunkHeader {
  globalSeq: number;
  length: number;
}
/** `CSAK` streamIndex u8 · chunkSeq u32 · offset u64. */
export interface ChunkSack {
  streamIndex: number;
  chunkSeq: number;
  offset: number;
}
/** `PING` — nothing but the magic. */
export type HealthPing = Record<string, never>;
/** status · u64 free bytes · `\n`. */
export interface HealthPong {
  status: HealthStatus;
  freeBytes: number;
}
/** `CTRL` u32 keepalive interval in seconds (1..2³²−1). */
export interface ControlOpen {
  keepaliveSeconds: number;
}
/** `CPNG` i64 unix-ns timestamp, agent → server. */
export interface ControlPing {
  timestampNs: bigint;
}
/** `CPNG` i64 echoed timestamp · f32 load · u32 free MiB, server → agent. */
export interface ControlPong {
  timestampNs: bigint;
  load: number;
  freeMiB: number;
}
export interface ControlRotate {
  streamIndex: number;
}
export interface ControlRotateAck {
  streamIndex: number;
}
export interface ControlAdmit {
  slot: number;
}
export interface ControlDefer {
  minutes: number;
}
export interface ControlAbort {
  reason: AbortReason;
}

/** What a client's first frame on a new connection is, decoded whole. */
export type ClientHello =
  | { kind: 'NBKP'; value: Handshake }
  | { kind: 'RSME'; value: Resume }
  | { kind: 'PJIN'; value: ParallelJoin }
  | { kind: 'PING'; value: HealthPing }
  | { kind: 'CTRL'; value: ControlOpen };

/** What an agent reads on a single-stream data connection. */
export type ServerDataMessage = { type: 'sack'; offset: number } | { type: 'final'; status: FinalStatus };

/** Control-channel frames the agent sends. */
export type ControlFromAgent = ({ type: 'ping' } & ControlPing) | ({ type: 'rotate-ack' } & ControlRotateAck);

/** Control-channel frames the server sends. */
export type ControlFromServer =
  | ({ type: 'pong' } & ControlPong)
  | ({ type: 'rotate' } & ControlRotate)
  | ({ type: 'admit' } & ControlAdmit)
  | ({ type: 'defer' } & ControlDefer)
  | ({ type: 'abort' } & ControlAbort);

// ─── Decoding machinery ───────────────────────────────────────────────────────────────────────

/** Thrown inside a decoder body when the buffer ends early; never escapes this module. */
const NEED_MORE: unique symbol = Symbol('need more bytes');

// ignoreBOM: a leading U+FEFF must stay in the name, not be silently stripped by the decoder.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function describeBytes(b: Buffer): string {
  const hex = b.toString('hex').replace(/(..)(?!$)/g, '$1 ');
  const printable = b.every((c) => c >= 0x20 && c < 0x7f);
  return printable ? `"${b.toString('latin1')}" (${hex})` : `0x${hex}`;
}

function hexByte(n: number): string {
  return `0x${n.toString(16).padStart(2, '0')}`;
}

class Parser {
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

function parse<T>(buf: Buffer, frame: string, body: (p: Parser) => T): Decoded<T> | null {
  const p = new Parser(buf, frame);
  try {
    const value = body(p);
    return { value, size: p.pos };
  } catch (err) {
    if (err === NEED_MORE) return null;
    throw err;
  }
}

// ─── Encoding machinery ───────────────────────────────────────────────────────────────────────

function invalid(frame: string, code: ProtocolErrorCode, what: string): ProtocolError {
  return new ProtocolError(code, `cannot encode ${frame}: ${what}`);
}

function uint(frame: string, field: string, v: unknown, max: number, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw invalid(frame, 'bad-value', `${field} must be an integer in ${min}..${max}, got ${String(v)}`);
  }
  return v;
}
const u8 = (frame: string, field: string, v: unknown, min = 0) => uint(frame, field, v, 0xff, min);
const u32 = (frame: string, field: string, v: unknown, min = 0) => uint(frame, field, v, 0xffff_ffff, min);
const u64 = (frame: string, field: string, v: unknown) => uint(frame, field, v, Number.MAX_SAFE_INTEGER);

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
function i64(frame: string, field: string, v: unknown): bigint {
  if (typeof v !== 'bigint' || v < I64_MIN || v > I64_MAX) {
    throw invalid(frame, 'bad-value', `${field} must be a bigint in the i64 range, got ${String(v)}`);
  }
  return v;
}

function f32(frame: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(Math.fround(v))) {
    throw invalid(frame, 'bad-value', `${field} must be a finite 32-bit float, got ${String(v)}`);
  }
  return v;
}

function status<T extends StatusTable>(frame: string, table: T, field: string, v: unknown): number {
  if (typeof v !== 'number' || !isStatus(table, v)) {
    throw invalid(frame, 'bad-status', `unknown ${field} ${String(v)}`);
  }
  return v;
}

// A lone surrogate in a JS string has no UTF-8 form; Buffer.from would silently write U+FFFD.
const LONE_SURROGATE = /\p{Cs}/u;

function line(frame: string, field: string, v: unknown): Buffer {
  if (typeof v !== 'string') throw invalid(frame, 'bad-value', `${field} must be a string, got ${typeof v}`);
  if (v.includes('\n')) throw invalid(frame, 'bad-value', `${field} may not contain "\\n"`);
  if (LONE_SURROGATE.test(v)) throw invalid(frame, 'bad-utf8', `${field} contains a lone UTF-16 surrogate`);
  const bytes = Buffer.from(v + '\n', 'utf8');
  if (bytes.length - 1 > MAX_LINE_BYTES) {
    throw invalid(frame, 'line-too-long', `${field} is ${bytes.length - 1} bytes, more than ${MAX_LINE_BYTES}`);
  }
  return bytes;
}

/** A zeroed buffer of `size` bytes with `magic` in its first 4. */
function withMagic(size: number, magic: Magic): Buffer {
  const b = Buffer.alloc(size);
  MagicBytes[magic].copy(b, 0);
  return b;
}

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeBigUInt64BE(BigInt(v), at);
}

// ─── §1 Backup session ────────────────────────────────────────────────────────────────────────

export function encodeHandshake(h: Omit<Handshake, 'version'> & { version?: number }): Buffer {
  const F = 'Handshake';
  const version = u8(F, 'version', h.version ?? PROTOCOL_VERSION);
  return Buffer.concat([
    MagicBytes.NBKP,
    Buffer.of(version),
    line(F, 'agent', h.agent),
    line(F, 'storage', h.storage),
    line(F, 'backup', h.backup),
  ]);
}

export function decodeHandshake(buf: Buffer): Decoded<Handshake> | null {
  return parse(buf, 'Handshake', (p) => {
    p.magic(Magic.NBKP);
    const version = p.u8();
    const agent = p.line('agent');
    const storage = p.line('storage');
    const backup = p.line('backup');
    return { version, agent, storage, backup };
  });
}

/** sessionId must be non-empty for GO and empty otherwise (spec §1). */
export function encodeAck(a: Ack): Buffer {
  const F = 'ACK';
  const st = status(F, AckStatus, 'ACK status', a.status);
  if (st === AckStatus.GO && a.sessionId === '') throw invalid(F, 'bad-value', 'GO needs a sessionId');
  if (st !== AckStatus.GO && a.sessionId !== '') {
    throw invalid(F, 'bad-value', 'sessionId must be empty unless the status is GO');
  }
  return Buffer.concat([Buffer.of(st), line(F, 'message', a.message), line(F, 'sessionId', a.sessionId)]);
}

export function decodeAck(buf: Buffer): Decoded<Ack> | null {
  return parse(buf, 'ACK', (p) => {
    const st = p.status(AckStatus, 'ACK status');
    const message = p.line('message');
    const sessionId = p.line('sessionId');
    return { status: st, message, sessionId };
  });
}

export function encodeSingleMode(): Buffer {
  return Buffer.of(0x00);
}

export function encodeParallelInit(init: ParallelInit): Buffer {
  const F = 'ParallelInit';
  const b = Buffer.alloc(PARALLEL_INIT_SIZE);
  b[0] = u8(F, 'maxStreams', init.maxStreams, 1);
  b.writeUInt32BE(u32(F, 'chunkSize', init.chunkSize, 1), 1);
  return b;
}

export function encodeMode(mode: Mode): Buffer {
  return mode.kind === 'single' ? encodeSingleMode() : encodeParallelInit(mode);
}

/** The byte after ACK GO: 0x00 single stream, or 1..255 starting a 5-byte ParallelInit. */
export function decodeMode(buf: Buffer): Decoded<Mode> | null {
  return parse(buf, 'Mode', (p): Mode => {
    const maxStreams = p.u8();
    if (maxStreams === 0) return { kind: 'single' };
    const chunkSize = p.u32();
    if (chunkSize === 0) throw p.fail('bad-value', 'ParallelInit chunkSize is 0');
    return { kind: 'parallel', maxStreams, chunkSize };
  });
}

/** Like decodeMode, but a single-stream byte is an error. */
export function decodeParallelInit(buf: Buffer): Decoded<ParallelInit> | null {
  return parse(buf, 'ParallelInit', (p) => {
    const maxStreams = p.u8();
    if (maxStreams === 0) throw p.fail('bad-value', 'maxStreams is 0 (that is the single-stream mode byte)');
    const chunkSize = p.u32();
    if (chunkSize === 0) throw p.fail('bad-value', 'chunkSize is 0');
    return { maxStreams, chunkSize };
  });
}

export function encodeSack(s: Sack): Buffer {
  const b = withMagic(SACK_SIZE, Magic.SACK);
  writeU64(b, u64('SACK', 'offset', s.offset), 4);
  return b;
}

export function decodeSack(buf: Buffer): Decoded<Sack> | null {
  return parse(buf, 'SACK', (p) => {
    p.magic(Magic.SACK);
    return { offset: p.u64('offset') };
  });
}

export function encodeTrailer(t: Trailer): Buffer {
  const F = 'Trailer';
  if (!(t.sha256 instanceof Uint8Array) || t.sha256.length !== 32) {
    throw invalid(F, 'bad-value', 'sha256 must be 32 bytes');
  }
  const b = withMagic(TRAILER_SIZE, Magic.DONE);
  b.set(t.sha256, 4);
  writeU64(b, u64(F, 'size', t.size), 36);
  return b;
}

export function decodeTrailer(buf: Buffer): Decoded<Trailer> | null {
  return parse(buf, 'Trailer', (p) => {
    p.magic(Magic.DONE);
    const sha256 = p.bytes(32);
    const size = p.u64('size');
    return { sha256, size };
  });
}

export function encodeFinalAck(f: FinalAck): Buffer {
  return Buffer.of(status('Final ACK', FinalStatus, 'Final ACK status', f.status));
}

export function decodeFinalAck(buf: Buffer): Decoded<FinalAck> | null {
  return parse(buf, 'Final ACK', (p) => ({ status: p.status(FinalStatus, 'Final ACK status') }));
}

/** SACK (first byte "S") or Final ACK (one status byte): what a single-stream agent reads. */
export function decodeServerDataMessage(buf: Buffer): Decoded<ServerDataMessage> | null {
  return parse(buf, 'server data message', (p): ServerDataMessage => {
    if (p.peekU8() === MagicBytes.SACK[0]) {
      p.magic(Magic.SACK);
      return { type: 'sack', offset: p.u64('SACK offset') };
    }
    return { type: 'final', status: p.status(FinalStatus, 'Final ACK status (or SACK magic)') };
  });
}

export function encodeServerDataMessage(m: ServerDataMessage): Buffer {
  return m.type === 'sack' ? encodeSack(m) : encodeFinalAck(m);
}

// ─── §2 Resume ────────────────────────────────────────────────────────────────────────────────

export function encodeResume(r: Omit<Resume, 'version'> & { version?: number }): Buffer {
  const F = 'Resume';
  const version = u8(F, 'version', r.version ?? PROTOCOL_VERSION);
  return Buffer.concat([
    MagicBytes.RSME,
    Buffer.of(version),
    line(F, 'sessionId', r.sessionId),
    line(F, 'agent', r.agent),
    line(F, 'storage', r.storage),
  ]);
}

export function decodeResume(buf: Buffer): Decoded<Resume> | null {
  return parse(buf, 'Resume', (p) => {
    p.magic(Magic.RSME);
    const version = p.u8();
    const sessionId = p.line('sessionId');
    const agent = p.line('agent');
    const storage = p.line('storage');
    return { version, sessionId, agent, storage };
  });
}

export function encodeResumeAck(r: ResumeAck): Buffer {
  const F = 'ResumeACK';
  const b = Buffer.alloc(RESUME_ACK_SIZE);
  b[0] = status(F, ResumeStatus, 'ResumeACK status', r.status);
  writeU64(b, u64(F, 'lastOffset', r.lastOffset), 1);
  return b;
}

export function decodeResumeAck(buf: Buffer): Decoded<ResumeAck> | null {
  return parse(buf, 'ResumeACK', (p) => {
    const st = p.status(ResumeStatus, 'ResumeACK status');
    return { status: st, lastOffset: p.u64('lastOffset') };
  });
}

// ─── §3 Parallel session ──────────────────────────────────────────────────────────────────────

export function encodeParallelJoin(j: Omit<ParallelJoin, 'version'> & { version?: number }): Buffer {
  const F = 'ParallelJoin';
  const version = u8(F, 'version', j.version ?? PROTOCOL_VERSION);
  const streamIndex = u8(F, 'streamIndex', j.streamIndex);
  return Buffer.concat([MagicBytes.PJIN, Buffer.of(version), line(F, 'sessionId', j.sessionId), Buffer.of(streamIndex)]);
}

export function decodeParallelJoin(buf: Buffer): Decoded<ParallelJoin> | null {
  return parse(buf, 'ParallelJoin', (p) => {
    p.magic(Magic.PJIN);
    const version = p.u8();
    const sessionId = p.line('sessionId');
    const streamIndex = p.u8();
    return { version, sessionId, streamIndex };
  });
}

export function encodeParallelAck(a: ParallelAck): Buffer {
  const F = 'ParallelACK';
  const b = Buffer.alloc(PARALLEL_ACK_SIZE);
  b[0] = status(F, ParallelStatus, 'ParallelACK status', a.status);
  writeU64(b, u64(F, 'lastOffset', a.lastOffset), 1);
  return b;
}

export function decodeParallelAck(buf: Buffer): Decoded<ParallelAck> | null {
  return parse(buf, 'ParallelACK', (p) => {
    const st = p.status(ParallelStatus, 'ParallelACK status');
    return { status: st, lastOffset: p.u64('lastOffset') };
  });
}

export function encodeChunkHeader(h: ChunkHeader): Buffer {
  const F = 'ChunkHeader';
  const b = Buffer.alloc(CHUNK_HEADER_SIZE);
  b.writeUInt32BE(u32(F, 'globalSeq', h.globalSeq), 0);
  b.writeUInt32BE(u32(F, 'length', h.length), 4);
  return b;
}

export function decodeChunkHeader(buf: Buffer): Decoded<ChunkHeader> | null {
  return parse(buf, 'ChunkHeader', (p) => {
    const globalSeq = p.u32();
    const length = p.u32();
    return { globalSeq, length };
  });
}

export function encodeChunkSack(s: ChunkSack): Buffer {
  const F = 'ChunkSACK';
  const b = withMagic(CHUNK_SACK_SIZE, Magic.CSAK);
  b[4] = u8(F, 'streamIndex', s.streamIndex);
  b.writeUInt32BE(u32(F, 'chunkSeq', s.chunkSeq), 5);
  writeU64(b, u64(F, 'offset', s.offset), 9);
  return b;
}

export function decodeChunkSack(buf: Buffer): Decoded<ChunkSack> | null {
  return parse(buf, 'ChunkSACK', (p) => {
    p.magic(Magic.CSAK);
    const streamIndex = p.u8();
    const chunkSeq = p.u32();
    const offset = p.u64('offset');
    return { streamIndex, chunkSeq, offset };
  });
}

// ─── §4 Health check ──────────────────────────────────────────────────────────────────────────

export function encodeHealthPing(): Buffer {
  return Buffer.from(MagicBytes.PING);
}

export function decodeHealthPing(buf: Buffer): Decoded<HealthPing> | null {
  return parse(buf, 'HealthPing', (p): HealthPing => {
    p.magic(Magic.PING);
    return {};
  });
}

export function encodeHealthPong(h: HealthPong): Buffer {
  const F = 'HealthPong';
  const b = Buffer.alloc(HEALTH_PONG_SIZE);
  b[0] = status(F, HealthStatus, 'health status', h.status);
  writeU64(b, u64(F, 'freeBytes', h.freeBytes), 1);
  b[9] = 0x0a;
  return b;
}

export function decodeHealthPong(buf: Buffer): Decoded<HealthPong> | null {
  return parse(buf, 'HealthPong', (p) => {
    const st = p.status(HealthStatus, 'health status');
    const freeBytes = p.u64('freeBytes');
    const end = p.u8();
    if (end !== 0x0a) throw p.fail('bad-value', `expected "\\n" after freeBytes, got ${hexByte(end)}`);
    return { status: st, freeBytes };
  });
}

// ─── §5 Control channel ───────────────────────────────────────────────────────────────────────

export function encodeControlOpen(o: ControlOpen): Buffer {
  const b = withMagic(CONTROL_OPEN_SIZE, Magic.CTRL);
  b.writeUInt32BE(u32('ControlOpen', 'keepaliveSeconds', o.keepaliveSeconds, 1), 4);
  return b;
}

export function decodeControlOpen(buf: Buffer): Decoded<ControlOpen> | null {
  return parse(buf, 'ControlOpen', (p) => {
    p.magic(Magic.CTRL);
    const keepaliveSeconds = p.u32();
    if (keepaliveSeconds === 0) throw p.fail('bad-value', 'keepalive interval is 0 seconds');
    return { keepaliveSeconds };
  });
}

export function encodeControlPing(c: ControlPing): Buffer {
  const b = withMagic(CONTROL_PING_SIZE, Magic.CPNG);
  b.writeBigInt64BE(i64('ControlPing', 'timestampNs', c.timestampNs), 4);
  return b;
}

export function decodeControlPing(buf: Buffer): Decoded<ControlPing> | null {
  return parse(buf, 'ControlPing', (p) => {
    p.magic(Magic.CPNG);
    return { timestampNs: p.i64() };
  });
}

/** `load` goes over the wire as an f32: what comes back is Math.fround(load). */
export function encodeControlPong(c: ControlPong): Buffer {
  const F = 'ControlPong';
  const b = withMagic(CONTROL_PONG_SIZE, Magic.CPNG);
  b.writeBigInt64BE(i64(F, 'timestampNs', c.timestampNs), 4);
  b.writeFloatBE(f32(F, 'load', c.load), 12);
  b.writeUInt32BE(u32(F, 'freeMiB', c.freeMiB), 16);
  return b;
}

export function decodeControlPong(buf: Buffer): Decoded<ControlPong> | null {
  return parse(buf, 'ControlPong', (p) => {
    p.magic(Magic.CPNG);
    const timestampNs = p.i64();
    const load = p.f32('load');
    const freeMiB = p.u32();
    return { timestampNs, load, freeMiB };
  });
}

/** magic · u8 (CROT, CRAK, CADM). */
function encodeU8Control(magic: Magic, frame: string, field: string, v: unknown): Buffer {
  const b = withMagic(CONTROL_ROTATE_SIZE, magic);
  b[4] = u8(frame, field, v);
  return b;
}

/** magic · u32 (CDFE, CABT); `v` already validated. */
function encodeU32Control(magic: Magic, v: number): Buffer {
  const b = withMagic(CONTROL_DEFER_SIZE, magic);
  b.writeUInt32BE(v, 4);
  return b;
}

export function encodeControlRotate(c: ControlRotate): Buffer {
  return encodeU8Control(Magic.CROT, 'ControlRotate', 'streamIndex', c.streamIndex);
}

export function decodeControlRotate(buf: Buffer): Decoded<ControlRotate> | null {
  return parse(buf, 'ControlRotate', (p) => {
    p.magic(Magic.CROT);
    return { streamIndex: p.u8() };
  });
}

export function encodeControlRotateAck(c: ControlRotateAck): Buffer {
  return encodeU8Control(Magic.CRAK, 'ControlRotateACK', 'streamIndex', c.streamIndex);
}

export function decodeControlRotateAck(buf: Buffer): Decoded<ControlRotateAck> | null {
  return parse(buf, 'ControlRotateACK', (p) => {
    p.magic(Magic.CRAK);
    return { streamIndex: p.u8() };
  });
}

export function encodeControlAdmit(c: ControlAdmit): Buffer {
  return encodeU8Control(Magic.CADM, 'ControlAdmit', 'slot', c.slot);
}

export function decodeControlAdmit(buf: Buffer): Decoded<ControlAdmit> | null {
  return parse(buf, 'ControlAdmit', (p) => {
    p.magic(Magic.CADM);
    return { slot: p.u8() };
  });
}

export function encodeControlDefer(c: ControlDefer): Buffer {
  const F = 'ControlDefer';
  return encodeU32Control(Magic.CDFE, u32(F, 'minutes', c.minutes));
}

export function decodeControlDefer(buf: Buffer): Decoded<ControlDefer> | null {
  return parse(buf, 'ControlDefer', (p) => {
    p.magic(Magic.CDFE);
    return { minutes: p.u32() };
  });
}

export function encodeControlAbort(c: ControlAbort): Buffer {
  const F = 'ControlAbort';
  return encodeU32Control(Magic.CABT, status(F, AbortReason, 'abort reason', c.reason));
}

export function decodeControlAbort(buf: Buffer): Decoded<ControlAbort> | null {
  return parse(buf, 'ControlAbort', (p) => {
    p.magic(Magic.CABT);
    return { reason: abortReason(p) };
  });
}

function abortReason(p: Parser): AbortReason {
  const v = p.u32();
  if (!isStatus(AbortReason, v)) throw p.fail('bad-status', `unknown abort reason ${v}`);
  return v;
}

const FROM_AGENT = [Magic.CPNG, Magic.CRAK] as const;

/** A frame the server reads on the control channel: CPNG is a 12-byte ping in this direction. */
export function decodeControlFromAgent(buf: Buffer): Decoded<ControlFromAgent> | null {
  return parse(buf, 'control frame from agent', (p): ControlFromAgent => {
    switch (p.magicOf(FROM_AGENT)) {
      case Magic.CPNG:
        return { type: 'ping', timestampNs: p.i64() };
      case Magic.CRAK:
        return { type: 'rotate-ack', streamIndex: p.u8() };
    }
  });
}

export function encodeControlFromAgent(m: ControlFromAgent): Buffer {
  switch (m.type) {
    case 'ping':
      return encodeControlPing(m);
    case 'rotate-ack':
      return encodeControlRotateAck(m);
  }
}

const FROM_SERVER = [Magic.CPNG, Magic.CROT, Magic.CADM, Magic.CDFE, Magic.CABT] as const;

/** A frame the agent reads on the control channel: CPNG is a 20-byte pong in this direction. */
export function decodeControlFromServer(buf: Buffer): Decoded<ControlFromServer> | null {
  return parse(buf, 'control frame from server', (p): ControlFromServer => {
    switch (p.magicOf(FROM_SERVER)) {
      case Magic.CPNG: {
        const timestampNs = p.i64();
        const load = p.f32('load');
        const freeMiB = p.u32();
        return { type: 'pong', timestampNs, load, freeMiB };
      }
      case Magic.CROT:
        return { type: 'rotate', streamIndex: p.u8() };
      case Magic.CADM:
        return { type: 'admit', slot: p.u8() };
      case Magic.CDFE:
        return { type: 'defer', minutes: p.u32() };
      case Magic.CABT:
        return { type: 'abort', reason: abortReason(p) };
    }
  });
}

export function encodeControlFromServer(m: ControlFromServer): Buffer {
  switch (m.type) {
    case 'pong':
      return encodeControlPong(m);
    case 'rotate':
      return encodeControlRotate(m);
    case 'admit':
      return encodeControlAdmit(m);
    case 'defer':
      return encodeControlDefer(m);
    case 'abort':
      return encodeControlAbort(m);
  }
}

// ─── Connection kind ──────────────────────────────────────────────────────────────────────────

/**
 * What a new connection is, from its first 4 bytes (peek: nothing is consumed, the whole frame
 * is then decoded from the same start). null until 4 bytes are there.
 */
export function decodeConnectionKind(buf: Buffer): ConnectionKind | null {
  const d = parse(buf, 'new connection', (p) => p.magicOf(CONNECTION_KINDS));
  return d === null ? null : d.value;
}

/** A client's whole first frame, whichever kind of connection it opens. */
export function decodeClientHello(buf: Buffer): Decoded<ClientHello> | null {
  const kind = decodeConnectionKind(buf);
  switch (kind) {
    case null:
      return null;
    case 'NBKP':
      return tag(kind, decodeHandshake(buf));
    case 'RSME':
      return tag(kind, decodeResume(buf));
    case 'PJIN':
      return tag(kind, decodeParallelJoin(buf));
    case 'PING':
      return tag(kind, decodeHealthPing(buf));
    case 'CTRL':
      return tag(kind, decodeControlOpen(buf));
  }
}

function tag<K extends ClientHello['kind']>(
  kind: K,
  d: Decoded<Extract<ClientHello, { kind: K }>['value']> | null,
): Decoded<ClientHello> | null {
  return d === null ? null : { value: { kind, value: d.value } as ClientHello, size: d.size };
}


/** Health check (spec §4) and control-channel (§5) frames. */
import {
  AbortReason,
  CONTROL_OPEN_SIZE,
  CONTROL_PING_SIZE,
  CONTROL_PONG_SIZE,
  CONTROL_U32_FRAME_SIZE,
  CONTROL_U8_FRAME_SIZE,
  HEALTH_PONG_SIZE,
  HealthStatus,
  Magic,
  MagicBytes,
  isStatus,
} from './constants.js';
import { type Decoded, type Parser, f32, hexByte, i64, parse, status, u32, u64, u8, withMagic, writeU64 } from './codec.js';

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

/** Control-channel frames the agent sends. */
export type ControlFromAgent = ({ type: 'ping' } & ControlPing) | ({ type: 'rotate-ack' } & ControlRotateAck);

/** Control-channel frames the server sends. */
export type ControlFromServer =
  | ({ type: 'pong' } & ControlPong)
  | ({ type: 'rotate' } & ControlRotate)
  | ({ type: 'admit' } & ControlAdmit)
  | ({ type: 'defer' } & ControlDefer)
  | ({ type: 'abort' } & ControlAbort);

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
  const b = withMagic(CONTROL_U8_FRAME_SIZE, magic);
  b[4] = u8(frame, field, v);
  return b;
}

/** magic · u32 (CDFE, CABT); `v` already validated. */
function encodeU32Control(magic: Magic, v: number): Buffer {
  const b = withMagic(CONTROL_U32_FRAME_SIZE, magic);
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

/** Frames of a parallel session's data streams (spec §3): PJIN, ParallelACK, chunk header, ChunkSACK. */
import { CHUNK_HEADER_SIZE, CHUNK_SACK_SIZE, Magic, MagicBytes, PARALLEL_ACK_SIZE, PROTOCOL_VERSION, ParallelStatus } from './constants.js';
import { type Decoded, line, parse, status, u32, u64, u8, withMagic, writeU64 } from './codec.js';

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

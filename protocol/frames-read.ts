/**
 * Version 5: the read side, and a health report that names its storages.
 *
 *   `HLTH` ver                                   ← HealthReport: status · u8 count, then count × StorageHealth
 *   `LIST` ver agent\n backup\n                  ← ListHead: status · message\n · u32 count, then count × ArchiveInfo
 *   `READ` ver agent\n storage\n backup\n name\n u8 target · u64 offset · u64 length
 *                                                ← ReadHead: status · message\n · u64 length, then that many bytes
 *   `IDXP` ver sessionId\n · u64 length, then that many bytes (the archive's index)
 *                                                ← IndexAck: status · message\n
 *
 * A server sends the parts of a multi-part answer as separate frames so that none is longer than
 * a reader buffers (one storage, one archive per frame).
 */
import { Magic, MagicBytes, PROTOCOL_VERSION, ReadStatus, ReadTarget, HealthStatus, StorageState } from './constants.js';
import { line, messageLine, parse, status, type Decoded, type Parser, u32, u64, u8, writeU64 } from './codec.js';

export interface HealthRequest {
  version: number;
}
export interface HealthReport {
  status: HealthStatus;
  /** How many StorageHealth frames follow. */
  storages: number;
}
export interface StorageHealth {
  name: string;
  state: StorageState;
  freeBytes: number;
  /** The storage's reserve (`min_free`). */
  minFreeBytes: number;
}

export interface ListRequest {
  version: number;
  agent: string;
  /** One backup entry, or '' for all of them. */
  backup: string;
}
/** The head of a LIST or READ answer, or the whole of an IndexAck. */
export interface ReadAnswer {
  status: ReadStatus;
  /** Why, when the status is not OK ('' otherwise). */
  message: string;
}
export interface ListHead extends ReadAnswer {
  count: number;
}
export interface ArchiveInfo {
  storage: string;
  backup: string;
  /** File name: `<timestamp>.tar.gz` or `.tar.zst`. */
  name: string;
  size: number;
  /** SHA-256 recorded at commit, or null for an archive committed without one. */
  sha256: Buffer | null;
  /** Members in the archive's index, or null when it has no index. */
  files: number | null;
  /** Size of the stored index (0 without one). */
  indexSize: number;
}

export interface ReadRequest {
  version: number;
  agent: string;
  storage: string;
  backup: string;
  name: string;
  target: ReadTarget;
  offset: number;
  /** 0: to the end. */
  length: number;
}
export interface ReadHead extends ReadAnswer {
  /** Bytes that follow the head (0 unless OK). */
  length: number;
}

export interface IndexPut {
  version: number;
  sessionId: string;
  length: number;
}

const v = (x?: number): number => x ?? PROTOCOL_VERSION;
const FLAG_SHA = 1;
const FLAG_INDEX = 2;

// ─── HLTH ─────────────────────────────────────────────────────────────────────────────────────

export function encodeHealthRequest(r: Partial<HealthRequest> = {}): Buffer {
  return Buffer.concat([MagicBytes.HLTH, Buffer.of(u8('HealthRequest', 'version', v(r.version)))]);
}

export function decodeHealthRequest(buf: Buffer): Decoded<HealthRequest> | null {
  return parse(buf, 'HealthRequest', (p): HealthRequest => {
    p.magic(Magic.HLTH);
    return { version: p.u8() };
  });
}

export function encodeHealthReport(r: HealthReport): Buffer {
  const F = 'HealthReport';
  return Buffer.of(status(F, HealthStatus, 'health status', r.status), u8(F, 'storages', r.storages));
}

export function decodeHealthReport(buf: Buffer): Decoded<HealthReport> | null {
  return parse(buf, 'HealthReport', (p): HealthReport => ({ status: p.status(HealthStatus, 'health status'), storages: p.u8() }));
}

export function encodeStorageHealth(s: StorageHealth): Buffer {
  const F = 'StorageHealth';
  const nums = Buffer.alloc(17);
  nums[0] = status(F, StorageState, 'storage state', s.state);
  writeU64(nums, u64(F, 'freeBytes', s.freeBytes), 1);
  writeU64(nums, u64(F, 'minFreeBytes', s.minFreeBytes), 9);
  return Buffer.concat([line(F, 'name', s.name), nums]);
}

export function decodeStorageHealth(buf: Buffer): Decoded<StorageHealth> | null {
  return parse(buf, 'StorageHealth', (p): StorageHealth => {
    const name = p.line('name');
    const state = p.status(StorageState, 'storage state');
    return { name, state, freeBytes: p.u64('freeBytes'), minFreeBytes: p.u64('minFreeBytes') };
  });
}

// ─── LIST ─────────────────────────────────────────────────────────────────────────────────────

export function encodeListRequest(r: Omit<ListRequest, 'version'> & { version?: number }): Buffer {
  const F = 'ListRequest';
  return Buffer.concat([MagicBytes.LIST, Buffer.of(u8(F, 'version', v(r.version))), line(F, 'agent', r.agent), line(F, 'backup', r.backup)]);
}

export function decodeListRequest(buf: Buffer): Decoded<ListRequest> | null {
  return parse(buf, 'ListRequest', (p): ListRequest => {
    p.magic(Magic.LIST);
    const version = p.u8();
    const agent = p.line('agent');
    return { version, agent, backup: p.line('backup') };
  });
}

export function encodeListHead(h: ListHead): Buffer {
  const F = 'ListHead';
  const count = Buffer.alloc(4);
  count.writeUInt32BE(u32(F, 'count', h.count));
  return Buffer.concat([answerHead(F, h), count]);
}

export function decodeListHead(buf: Buffer): Decoded<ListHead> | null {
  return parse(buf, 'ListHead', (p): ListHead => ({ ...readAnswer(p), count: p.u32() }));
}

export function encodeArchiveInfo(a: ArchiveInfo): Buffer {
  const F = 'ArchiveInfo';
  if (a.sha256 !== null && a.sha256.length !== 32) throw new RangeError(`${F}: sha256 must be 32 bytes, got ${a.sha256.length}`);
  const nums = Buffer.alloc(8 + 1 + 32 + 8 + 8);
  writeU64(nums, u64(F, 'size', a.size), 0);
  nums[8] = (a.sha256 ? FLAG_SHA : 0) | (a.files !== null ? FLAG_INDEX : 0);
  a.sha256?.copy(nums, 9);
  writeU64(nums, u64(F, 'files', a.files ?? 0), 41);
  writeU64(nums, u64(F, 'indexSize', a.indexSize), 49);
  return Buffer.concat([line(F, 'storage', a.storage), line(F, 'backup', a.backup), line(F, 'name', a.name), nums]);
}

export function decodeArchiveInfo(buf: Buffer): Decoded<ArchiveInfo> | null {
  return parse(buf, 'ArchiveInfo', (p): ArchiveInfo => {
    const storage = p.line('storage');
    const backup = p.line('backup');
    const name = p.line('name');
    const size = p.u64('size');
    const flags = p.u8();
    if (flags & ~(FLAG_SHA | FLAG_INDEX)) throw p.fail('bad-value', `unknown flags 0x${flags.toString(16)}`);
    const sha = p.bytes(32);
    const files = p.u64('files');
    const indexSize = p.u64('indexSize');
    return { storage, backup, name, size, sha256: flags & FLAG_SHA ? sha : null, files: flags & FLAG_INDEX ? files : null, indexSize };
  });
}

// ─── READ ─────────────────────────────────────────────────────────────────────────────────────

export function encodeReadRequest(r: Omit<ReadRequest, 'version'> & { version?: number }): Buffer {
  const F = 'ReadRequest';
  const nums = Buffer.alloc(17);
  nums[0] = status(F, ReadTarget, 'read target', r.target);
  writeU64(nums, u64(F, 'offset', r.offset), 1);
  writeU64(nums, u64(F, 'length', r.length), 9);
  return Buffer.concat([
    MagicBytes.READ,
    Buffer.of(u8(F, 'version', v(r.version))),
    line(F, 'agent', r.agent),
    line(F, 'storage', r.storage),
    line(F, 'backup', r.backup),
    line(F, 'name', r.name),
    nums,
  ]);
}

export function decodeReadRequest(buf: Buffer): Decoded<ReadRequest> | null {
  return parse(buf, 'ReadRequest', (p): ReadRequest => {
    p.magic(Magic.READ);
    const version = p.u8();
    const agent = p.line('agent');
    const storage = p.line('storage');
    const backup = p.line('backup');
    const name = p.line('name');
    const target = p.status(ReadTarget, 'read target');
    return { version, agent, storage, backup, name, target, offset: p.u64('offset'), length: p.u64('length') };
  });
}

export function encodeReadHead(h: ReadHead): Buffer {
  const F = 'ReadHead';
  const len = Buffer.alloc(8);
  writeU64(len, u64(F, 'length', h.length), 0);
  return Buffer.concat([answerHead(F, h), len]);
}

export function decodeReadHead(buf: Buffer): Decoded<ReadHead> | null {
  return parse(buf, 'ReadHead', (p): ReadHead => ({ ...readAnswer(p), length: p.u64('length') }));
}

// ─── IDXP ─────────────────────────────────────────────────────────────────────────────────────

export function encodeIndexPut(r: Omit<IndexPut, 'version'> & { version?: number }): Buffer {
  const F = 'IndexPut';
  const len = Buffer.alloc(8);
  writeU64(len, u64(F, 'length', r.length), 0);
  return Buffer.concat([MagicBytes.IDXP, Buffer.of(u8(F, 'version', v(r.version))), line(F, 'sessionId', r.sessionId), len]);
}

export function decodeIndexPut(buf: Buffer): Decoded<IndexPut> | null {
  return parse(buf, 'IndexPut', (p): IndexPut => {
    p.magic(Magic.IDXP);
    const version = p.u8();
    const sessionId = p.line('sessionId');
    return { version, sessionId, length: p.u64('length') };
  });
}

export function encodeIndexAck(a: ReadAnswer): Buffer {
  return answerHead('IndexAck', a);
}

export function decodeIndexAck(buf: Buffer): Decoded<ReadAnswer> | null {
  return parse(buf, 'IndexAck', readAnswer);
}

// ─── Shared ───────────────────────────────────────────────────────────────────────────────────

function answerHead(frame: string, a: ReadAnswer): Buffer {
  return Buffer.concat([Buffer.of(status(frame, ReadStatus, 'status', a.status)), messageLine(frame, 'message', a.message)]);
}

function readAnswer(p: Parser): ReadAnswer {
  const st = p.status(ReadStatus, 'status');
  return { status: st, message: p.line('message') };
}

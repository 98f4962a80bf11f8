/**
 * Known-good frames for the protocol tests: each value next to its bytes, written out by hand in
 * hex from the spec (never produced by the encoder under test).
 */
import {
  AbortReason,
  AckStatus,
  FinalStatus,
  HealthStatus,
  ParallelStatus,
  ResumeStatus,
  type Decoded,
  decodeAck,
  decodeChunkHeader,
  decodeChunkSack,
  decodeControlAbort,
  decodeControlAdmit,
  decodeControlDefer,
  decodeControlOpen,
  decodeControlPing,
  decodeControlPong,
  decodeControlRotate,
  decodeControlRotateAck,
  decodeFinalAck,
  decodeHandshake,
  decodeHealthPing,
  decodeHealthPong,
  decodeMode,
  decodeParallelAck,
  decodeParallelInit,
  decodeParallelJoin,
  decodeResume,
  decodeResumeAck,
  decodeSack,
  decodeTrailer,
  encodeAck,
  encodeChunkHeader,
  encodeChunkSack,
  encodeControlAbort,
  encodeControlAdmit,
  encodeControlDefer,
  encodeControlOpen,
  encodeControlPing,
  encodeControlPong,
  encodeControlRotate,
  encodeControlRotateAck,
  encodeFinalAck,
  encodeHandshake,
  encodeHealthPing,
  encodeHealthPong,
  encodeMode,
  encodeParallelAck,
  encodeParallelInit,
  encodeParallelJoin,
  encodeResume,
  encodeResumeAck,
  encodeSack,
  encodeTrailer,
} from '../../protocol/index.js';

/** Hex with any whitespace in it → bytes. */
export function hex(s: string): Buffer {
  const clean = s.replace(/\s+/g, '');
  if (!/^([0-9a-f]{2})*$/i.test(clean)) throw new Error(`bad hex in test: ${s}`);
  return Buffer.from(clean, 'hex');
}

export interface Vector {
  name: string;
  bytes: Buffer;
  value: unknown;
  encode: () => Buffer;
  /** Decode with the frame's own decoder, as unknown so the table can mix frame types. */
  decode: (b: Buffer) => Decoded<unknown> | null;
}

function vector<T>(name: string, hexBytes: string, value: T, encode: (v: T) => Buffer, decode: (b: Buffer) => Decoded<T> | null): Vector {
  return { name, bytes: hex(hexBytes), value, encode: () => encode(value), decode };
}

export const UUID = '0f8fad5b-d9cb-469f-a165-70867728950e';
//                   "0f8f"   "ad5b"   "-d9c"   "b-46"   "9f-a"   "165-"   "7086"   "7728"   "950e"
export const UUID_HEX = '30663866 61643562 2d643963 622d3436 39662d61 3136352d 37303836 37373238 39353065';

// SHA-256 of the empty string.
export const SHA_EMPTY_HEX = 'e3b0c442 98fc1c14 9afbf4c8 996fb924 27ae41e4 649b934c a495991b 7852b855';

export const VECTORS: Vector[] = [
  vector(
    'Handshake',
    '4e424b50 02  7765622d3031 0a  73637269707473 0a  617070 0a', // NBKP 02 web-01\n scripts\n app\n
    { version: 2, agent: 'web-01', storage: 'scripts', backup: 'app' },
    encodeHandshake,
    decodeHandshake,
  ),
  vector(
    'Handshake other version byte',
    '4e424b50 07  61 0a  62 0a  63 0a',
    { version: 7, agent: 'a', storage: 'b', backup: 'c' },
    encodeHandshake,
    decodeHandshake,
  ),
  vector('Ack GO', `00  0a  ${UUID_HEX} 0a`, { status: AckStatus.GO, message: '', sessionId: UUID }, encodeAck, decodeAck),
  vector(
    'Ack REJECT',
    '03  434e206d69736d61746368 0a  0a', // "CN mismatch"
    { status: AckStatus.REJECT, message: 'CN mismatch', sessionId: '' },
    encodeAck,
    decodeAck,
  ),
  vector('Ack STORAGE_NOT_FOUND', '04 0a 0a', { status: AckStatus.STORAGE_NOT_FOUND, message: '', sessionId: '' }, encodeAck, decodeAck),
  vector('Mode single', '00', { kind: 'single' as const }, encodeMode, decodeMode),
  vector(
    'Mode parallel',
    '04  00100000',
    { kind: 'parallel' as const, maxStreams: 4, chunkSize: 1048576 },
    encodeMode,
    decodeMode,
  ),
  vector('ParallelInit', 'ff  ffffffff', { maxStreams: 255, chunkSize: 0xffffffff }, encodeParallelInit, decodeParallelInit),
  vector('Sack', '5341434b  00000001 00000002', { offset: 4294967298 }, encodeSack, decodeSack),
  vector('Sack max safe', '5341434b  001fffff ffffffff', { offset: Number.MAX_SAFE_INTEGER }, encodeSack, decodeSack),
  vector(
    'Trailer',
    `444f4e45  ${SHA_EMPTY_HEX}  00000000 000004d2`,
    { sha256: hex(SHA_EMPTY_HEX), size: 1234 },
    encodeTrailer,
    decodeTrailer,
  ),
  vector('FinalAck OK', '00', { status: FinalStatus.OK }, encodeFinalAck, decodeFinalAck),
  vector('FinalAck CHECKSUM_MISMATCH', '01', { status: FinalStatus.CHECKSUM_MISMATCH }, encodeFinalAck, decodeFinalAck),
  vector('FinalAck WRITE_ERROR', '02', { status: FinalStatus.WRITE_ERROR }, encodeFinalAck, decodeFinalAck),
  vector(
    'Resume',
    '52534d45 02  616263 0a  636166c3a9 0a  686f6d65 0a', // RSME 02 abc\n café\n home\n
    { version: 2, sessionId: 'abc', agent: 'café', storage: 'home' },
    encodeResume,
    decodeResume,
  ),
  vector('ResumeAck OK', '00  00000000 00010000', { status: ResumeStatus.OK, lastOffset: 65536 }, encodeResumeAck, decodeResumeAck),
  vector('ResumeAck NOT_FOUND', '01  00000000 00000000', { status: ResumeStatus.NOT_FOUND, lastOffset: 0 }, encodeResumeAck, decodeResumeAck),
  vector(
    'ParallelJoin',
    '504a494e 02  616263 0a  07', // PJIN 02 abc\n 07
    { version: 2, sessionId: 'abc', streamIndex: 7 },
    encodeParallelJoin,
    decodeParallelJoin,
  ),
  vector(
    'ParallelJoin stream 10 (0x0a after the line)',
    `504a494e 02  ${UUID_HEX} 0a  0a`,
    { version: 2, sessionId: UUID, streamIndex: 10 },
    encodeParallelJoin,
    decodeParallelJoin,
  ),
  vector('ParallelAck OK', '00  00000000 0000012c', { status: ParallelStatus.OK, lastOffset: 300 }, encodeParallelAck, decodeParallelAck),
  vector('ParallelAck FULL', '01  00000000 00000000', { status: ParallelStatus.FULL, lastOffset: 0 }, encodeParallelAck, decodeParallelAck),
  vector('ParallelAck NOT_FOUND', '02  00000000 00000000', { status: ParallelStatus.NOT_FOUND, lastOffset: 0 }, encodeParallelAck, decodeParallelAck),
  vector('ChunkHeader', '00000005  00100000', { globalSeq: 5, length: 1048576 }, encodeChunkHeader, decodeChunkHeader),
  vector(
    'ChunkSack',
    '4353414b  02  00000009  00000001 00000008',
    { streamIndex: 2, chunkSeq: 9, offset: 4294967304 },
    encodeChunkSack,
    decodeChunkSack,
  ),
  vector('HealthPing', '50494e47', {}, () => encodeHealthPing(), decodeHealthPing),
  vector(
    'HealthPong',
    '02  00000000 40000000  0a',
    { status: HealthStatus.LOW_DISK, freeBytes: 1073741824 },
    encodeHealthPong,
    decodeHealthPong,
  ),
  vector('ControlOpen', '4354524c  0000001e', { keepaliveSeconds: 30 }, encodeControlOpen, decodeControlOpen),
  vector('ControlPing', '43504e47  182304d6 676f4000', { timestampNs: 1739239200000000000n }, encodeControlPing, decodeControlPing),
  vector('ControlPing negative', '43504e47  ffffffff ffffffff', { timestampNs: -1n }, encodeControlPing, decodeControlPing),
  vector(
    'ControlPong',
    '43504e47  01234567 89abcdef  3e800000  00000800', // load 0.25 = 0x3e800000
    { timestampNs: 0x0123456789abcdefn, load: 0.25, freeMiB: 2048 },
    encodeControlPong,
    decodeControlPong,
  ),
  vector('ControlRotate', '43524f54  03', { streamIndex: 3 }, encodeControlRotate, decodeControlRotate),
  vector('ControlRotateAck', '4352414b  03', { streamIndex: 3 }, encodeControlRotateAck, decodeControlRotateAck),
  vector('ControlAdmit', '4341444d  01', { slot: 1 }, encodeControlAdmit, decodeControlAdmit),
  vector('ControlDefer', '43444645  0000000f', { minutes: 15 }, encodeControlDefer, decodeControlDefer),
  vector('ControlAbort', '43414254  00000001', { reason: AbortReason.DISK_FULL }, encodeControlAbort, decodeControlAbort),
  vector('ControlAbort MAINTENANCE', '43414254  00000003', { reason: AbortReason.MAINTENANCE }, encodeControlAbort, decodeControlAbort),
];

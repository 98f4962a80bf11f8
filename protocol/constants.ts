/**
 * Numbers and magics of the NBKP wire protocol (spec: protocol/README.md). Everything here is
 * data; the byte layout lives in frames.ts.
 */

/** The version byte this implementation speaks (handshake, resume and parallel join). */
export const PROTOCOL_VERSION = 0x05;

/** Versions a server built from this code understands; anything else gets REJECT. */
const SUPPORTED_VERSIONS: readonly number[] = [0x02, 0x03, 0x04, PROTOCOL_VERSION];

export function isSupportedVersion(version: number): boolean {
  return SUPPORTED_VERSIONS.includes(version);
}

/**
 * Version 3 answers say why: the Final ACK carries a message line, and there are statuses a
 * version-2 peer does not know (ACK STORAGE_UNAVAILABLE, Final NO_SPACE, ResumeACK COMMITTED).
 * A server answers a version-2 peer in version-2 terms (see protocol/README.md).
 */
export function speaksReasons(version: number): boolean {
  return version >= 0x03;
}

/** Version 4 knows ACK WAIT (admission) and ABRT; a server tells older peers BUSY instead. */
export function speaksAdmission(version: number): boolean {
  return version >= 0x04;
}

/** Most content bytes a line may carry, not counting its `\n`. A 513th byte without `\n` is an error. */
export const MAX_LINE_BYTES = 512;

/** The 4-byte magics, as text. Each is exactly 4 ASCII bytes on the wire. */
export const Magic = {
  NBKP: 'NBKP',
  RSME: 'RSME',
  PJIN: 'PJIN',
  PING: 'PING',
  CTRL: 'CTRL',
  ABRT: 'ABRT',
  HLTH: 'HLTH',
  LIST: 'LIST',
  READ: 'READ',
  IDXP: 'IDXP',
  SACK: 'SACK',
  DONE: 'DONE',
  CSAK: 'CSAK',
  CPNG: 'CPNG',
  CROT: 'CROT',
  CRAK: 'CRAK',
  CADM: 'CADM',
  CDFE: 'CDFE',
  CABT: 'CABT',
} as const;
export type Magic = (typeof Magic)[keyof typeof Magic];

/**
 * The same magics as 4-byte Buffers. Shared instances: compare and copy them, never write into
 * them (encoders always build fresh buffers).
 */
export const MagicBytes: Readonly<Record<Magic, Buffer>> = Object.freeze(
  Object.fromEntries(Object.values(Magic).map((m) => [m, Buffer.from(m, 'latin1')])) as Record<Magic, Buffer>,
);

export const MAGIC_SIZE = 4;

/** The magics a client may open a connection with, i.e. what the connection is. */
export const CONNECTION_KINDS = ['NBKP', 'RSME', 'PJIN', 'PING', 'CTRL', 'ABRT', 'HLTH', 'LIST', 'READ', 'IDXP'] as const;
export type ConnectionKind = (typeof CONNECTION_KINDS)[number];

/** ACK of the NBKP handshake. STORAGE_UNAVAILABLE: version 3. */
/** ACK status. STORAGE_UNAVAILABLE: version 3. WAIT (at max_concurrent_sessions; retry when admitted): version 4. */
export const AckStatus = { GO: 0, FULL: 1, BUSY: 2, REJECT: 3, STORAGE_NOT_FOUND: 4, STORAGE_UNAVAILABLE: 5, WAIT: 6 } as const;
export type AckStatus = (typeof AckStatus)[keyof typeof AckStatus];

/** Final ACK after the trailer (or ending a session early). NO_SPACE: version 3. */
export const FinalStatus = { OK: 0, CHECKSUM_MISMATCH: 1, WRITE_ERROR: 2, NO_SPACE: 3 } as const;
export type FinalStatus = (typeof FinalStatus)[keyof typeof FinalStatus];

/** ResumeACK. COMMITTED (version 3): the session is already committed; size and SHA-256 follow. */
export const ResumeStatus = { OK: 0, NOT_FOUND: 1, COMMITTED: 2 } as const;
export type ResumeStatus = (typeof ResumeStatus)[keyof typeof ResumeStatus];

/** AbortACK (version 4): what became of the session the agent gave up. */
export const AbortStatus = { DISCARDED: 0, NOT_FOUND: 1, COMMITTED: 2 } as const;
export type AbortStatus = (typeof AbortStatus)[keyof typeof AbortStatus];
export const ABORT_ACK_SIZE = 1;

/** ParallelACK. */
export const ParallelStatus = { OK: 0, FULL: 1, NOT_FOUND: 2 } as const;
export type ParallelStatus = (typeof ParallelStatus)[keyof typeof ParallelStatus];

/** Health check answer. */
export const HealthStatus = { READY: 0, BUSY: 1, LOW_DISK: 2, MAINTENANCE: 3 } as const;
export type HealthStatus = (typeof HealthStatus)[keyof typeof HealthStatus];

/** A storage in a version-5 health report: usable, below its reserve (`min_free`), or not usable at all. */
export const StorageState = { OK: 0, LOW: 1, UNUSABLE: 2 } as const;
export type StorageState = (typeof StorageState)[keyof typeof StorageState];

/** Answer to LIST, READ and IDXP (version 5). REJECT: the request is not allowed (the message says why). */
export const ReadStatus = { OK: 0, NOT_FOUND: 1, REJECT: 2 } as const;
export type ReadStatus = (typeof ReadStatus)[keyof typeof ReadStatus];

/** What a READ reads: the archive itself or its index. */
export const ReadTarget = { ARCHIVE: 0, INDEX: 1 } as const;
export type ReadTarget = (typeof ReadTarget)[keyof typeof ReadTarget];

/** Reason of a ControlAbort (a u32 on the wire). */
export const AbortReason = { DISK_FULL: 1, SERVER_BUSY: 2, MAINTENANCE: 3 } as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];

/**
 * Chunk sizes a parallel session may announce in ParallelInit (the agent's `resume.chunk_size`
 * range). The server refuses a session outside it.
 */
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

/** Fixed frame sizes in bytes, magic included where the frame has one. */
export const TRAILER_SIZE = 44;
export const SACK_SIZE = 12;
export const RESUME_ACK_SIZE = 9;
/** A ResumeACK COMMITTED: status · u64 size · sha256[32]. */
export const RESUME_ACK_COMMITTED_SIZE = 41;
export const PARALLEL_ACK_SIZE = 9;
export const PARALLEL_INIT_SIZE = 5;
export const CHUNK_HEADER_SIZE = 8;
export const CHUNK_SACK_SIZE = 17;
export const HEALTH_PONG_SIZE = 10;
export const CONTROL_OPEN_SIZE = 8;
export const CONTROL_PING_SIZE = 12;
export const CONTROL_PONG_SIZE = 20;
/** CROT, CRAK, CADM: magic · u8. */
export const CONTROL_U8_FRAME_SIZE = 5;
/** CDFE, CABT: magic · u32. */
export const CONTROL_U32_FRAME_SIZE = 8;

/** A status table such as AckStatus. */
export type StatusTable = Readonly<Record<string, number>>;

/** Whether `value` is one of the numbers in `table`. */
export function isStatus<T extends StatusTable>(table: T, value: number): value is T[keyof T] {
  for (const key in table) if (table[key] === value) return true;
  return false;
}

/** The name of a status number for logs: statusName(AckStatus, 2) → "BUSY"; unknown → "unknown(0x07)". */
export function statusName(table: StatusTable, value: number): string {
  for (const key in table) if (table[key] === value) return key;
  const hex = Number.isInteger(value) && value >= 0 ? `0x${value.toString(16).padStart(2, '0')}` : String(value);
  return `unknown(${hex})`;
}

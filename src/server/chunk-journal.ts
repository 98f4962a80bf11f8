import fs from 'node:fs';
import { writeAll } from './file-io.js';
import { openRegular, openRegularFd } from './storage-entries.js';

/**
 * The record of where a parallel session's chunks are stored, kept beside its temporary file so
 * that a server that stops (killed or not) can take the session up again: one fixed-size record
 * per chunk each time it is stored, in the staging file or appended to the temporary file. A
 * record is written before the chunk is acknowledged, so every acknowledged chunk is in it.
 *
 *   u32 seq · u32 length · u8 stream · u8 where (0 file, 1 staging) · u16 0 · u64 streamStart
 *   · u64 at (offset in the file where it lies) · u32 0                            = 32 bytes
 */
export interface ChunkRecord {
  seq: number;
  length: number;
  /** The data stream it came on, and where its header started in that stream. */
  stream: number;
  streamStart: number;
  where: 'file' | 'staging';
  at: number;
}

const RECORD = 32;

function encode(r: ChunkRecord): Buffer {
  const b = Buffer.alloc(RECORD);
  b.writeUInt32BE(r.seq, 0);
  b.writeUInt32BE(r.length, 4);
  b[8] = r.stream;
  b[9] = r.where === 'file' ? 0 : 1;
  b.writeBigUInt64BE(BigInt(r.streamStart), 12);
  b.writeBigUInt64BE(BigInt(r.at), 20);
  return b;
}

function decode(b: Buffer): ChunkRecord {
  return {
    seq: b.readUInt32BE(0),
    length: b.readUInt32BE(4),
    stream: b[8],
    where: b[9] === 0 ? 'file' : 'staging',
    streamStart: Number(b.readBigUInt64BE(12)),
    at: Number(b.readBigUInt64BE(20)),
  };
}

export class ChunkJournal {
  private constructor(
    private fd: number,
    private end: number,
  ) {}

  /** A new, empty journal (a new session). */
  static async create(path: string): Promise<ChunkJournal> {
    return new ChunkJournal(await openRegularFd(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC), 0);
  }

  /** An existing journal to append to (an adopted session), after its last whole record. */
  static async reopen(path: string): Promise<ChunkJournal> {
    const fd = await openRegularFd(path, fs.constants.O_RDWR);
    const size = fs.fstatSync(fd).size;
    return new ChunkJournal(fd, size - (size % RECORD));
  }

  /** Every whole record of a journal file, in the order written. */
  static async read(path: string): Promise<ChunkRecord[]> {
    const fh = await openRegular(path);
    const data = await fh.readFile().finally(() => fh.close());
    const out: ChunkRecord[] = [];
    for (let at = 0; at + RECORD <= data.length; at += RECORD) out.push(decode(data.subarray(at, at + RECORD)));
    return out;
  }

  async append(r: ChunkRecord): Promise<void> {
    const at = this.end;
    this.end += RECORD;
    await writeAll(this.fd, encode(r), at);
  }

  close(): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    return fd < 0 ? Promise.resolve() : new Promise((resolve) => fs.close(fd, () => resolve()));
  }
}

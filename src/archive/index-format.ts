import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { NbackupError } from '../errors.js';
import { parseIndexHeader, type IndexHeader } from './index-header.js';
import type { MemberType } from './tar-reader.js';

/**
 * The body of an index (`<archive>.index.gz`), after its header line (index-header.ts):
 *
 *   {"blocks":[c0,c1,…]}              compressed size of every block, in archive order
 *   [offset,"t",size,mode,mtime,name(,link)]   one line per tar member, in archive order
 *
 * `offset` is where the member's first header record (its PAX header, when it has one) starts in
 * the tar stream, so member i spans [offset_i, offset_i+1). `t` is the tar type flag (0 file,
 * 1 hard link, 2 symlink, 3/4 devices, 5 folder, 6 FIFO); `size` a file's real size (a sparse
 * file's too). A name or link that is not UTF-8 is written {"hex":"…"} so that its bytes survive.
 * The file is several gzip members one after the other (header and blocks first, written last),
 * which any gzip reader takes as one stream.
 */
export interface IndexMember {
  offset: number;
  type: MemberType;
  size: number;
  mode: number;
  mtime: number;
  name: Buffer;
  /** Link target of a hard link or symlink. */
  link?: Buffer;
}

const FLAG: Record<MemberType, string> = {
  file: '0', hardlink: '1', symlink: '2', 'char-device': '3', 'block-device': '4', directory: '5', fifo: '6',
};
const TYPE = Object.fromEntries(Object.entries(FLAG).map(([t, f]) => [f, t])) as Record<string, MemberType>;

function bytesJson(b: Buffer): string {
  return isUtf8(b) ? JSON.stringify(b.toString('utf8')) : `{"hex":"${b.toString('hex')}"}`;
}

function bytesOf(v: unknown, what: string): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (v && typeof v === 'object' && typeof (v as { hex?: unknown }).hex === 'string') return Buffer.from((v as { hex: string }).hex, 'hex');
  throw new Error(`${what} is neither text nor {"hex"}`);
}

export function memberLine(m: IndexMember): string {
  const link = m.link && m.link.length > 0 ? `,${bytesJson(m.link)}` : '';
  return `[${m.offset},"${FLAG[m.type]}",${m.size},${m.mode},${m.mtime},${bytesJson(m.name)}${link}]\n`;
}

export function parseMemberLine(line: string): IndexMember {
  const a = JSON.parse(line) as unknown[];
  if (!Array.isArray(a) || a.length < 6) throw new Error('a member line is not [offset,type,size,mode,mtime,name]');
  const [offset, flag, size, mode, mtime] = a;
  const whole = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!whole(offset) || !whole(size) || !whole(mode) || typeof mtime !== 'number') throw new Error('a member line has a number out of range');
  const type = TYPE[String(flag)];
  if (!type) throw new Error(`unknown member type ${JSON.stringify(flag)}`);
  const m: IndexMember = { offset, type, size, mode, mtime, name: bytesOf(a[5], 'a name') };
  if (a.length > 6) m.link = bytesOf(a[6], 'a link');
  return m;
}

/** The first gzip member of an index: its header line and the block sizes. */
export function indexHead(h: IndexHeader, blocks: readonly number[]): Buffer {
  return zlib.gzipSync(`${JSON.stringify(h)}\n{"blocks":[${blocks.join(',')}]}\n`);
}

/** Longest line accepted (the blocks line of a 10 TB archive is about 70 MB; a member line is short). */
const MAX_LINE = 128 * 1024 * 1024;

/**
 * The decompressed stream cut at '\n'. Only each new chunk is searched, and a line longer than a
 * chunk is kept as a list of pieces joined once, so a long line costs time in proportion to its
 * length; a line is decoded whole, so a UTF-8 name split between two chunks survives.
 */
async function* lines(compressed: Readable): AsyncGenerator<string> {
  const gunzip = zlib.createGunzip();
  compressed.on('error', (err) => gunzip.destroy(err));
  compressed.pipe(gunzip);
  let pieces: Buffer[] = [];
  let held = 0;
  for await (const chunk of gunzip as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      const tail = chunk.subarray(start, nl);
      yield (held === 0 ? tail : Buffer.concat([...pieces, tail], held + tail.length)).toString('utf8');
      pieces = [];
      held = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      pieces.push(chunk.subarray(start));
      held += chunk.length - start;
      if (held > MAX_LINE) throw new Error('an index line longer than 128 MB');
    }
  }
  if (held > 0) throw new Error('the index ends inside a line');
}

export interface IndexReader {
  header: IndexHeader;
  /** Compressed size of each block. */
  blocks: number[];
  /** The members, in archive order; checks as it goes that offsets rise and stay in the tar. */
  members: AsyncGenerator<IndexMember>;
}

/** Opens an index from its compressed bytes; throws (NbackupError 'checksum') when it is not one or does not add up. */
export async function readIndex(compressed: Readable): Promise<IndexReader> {
  const it = lines(compressed);
  const bad = (why: string): NbackupError => new NbackupError('checksum', `index: ${why}`);
  const next = async (what: string): Promise<string> => {
    const r = await it.next();
    if (r.done) throw bad(`no ${what} line`);
    return r.value;
  };
  let header: IndexHeader;
  let blocks: number[];
  try {
    header = parseIndexHeader(await next('header'));
    const b = (JSON.parse(await next('blocks')) as { blocks?: unknown }).blocks;
    if (!Array.isArray(b) || !b.every((n) => Number.isSafeInteger(n) && (n as number) > 0)) throw new Error('the blocks line is not a list of sizes');
    blocks = b as number[];
  } catch (err) {
    await it.return(undefined);
    throw err instanceof NbackupError ? err : bad((err as Error).message);
  }
  if (blocks.length !== header.blocks || blocks.length !== Math.ceil(header.tarSize / header.blockSize)) throw bad(`${blocks.length} blocks do not cover a tar of ${header.tarSize} bytes`);
  if (blocks.reduce((s, n) => s + n, 0) !== header.archiveSize) throw bad('the block sizes do not add up to the archive size');
  async function* members(): AsyncGenerator<IndexMember> {
    let last = -1;
    let count = 0;
    try {
      for await (const line of it) {
        let m: IndexMember;
        try {
          m = parseMemberLine(line);
        } catch (err) {
          throw bad(`member ${count + 1}: ${(err as Error).message}`);
        }
        if (m.offset <= last || m.offset % 512 !== 0 || m.offset >= header.tarSize) throw bad(`member ${count + 1} has offset ${m.offset} out of order or outside the tar`);
        last = m.offset;
        count++;
        yield m;
      }
    } catch (err) {
      throw err instanceof NbackupError ? err : bad((err as Error).message);
    }
    if (count !== header.members) throw bad(`${count} members listed, the header says ${header.members}`);
  }
  return { header, blocks, members: members() };
}

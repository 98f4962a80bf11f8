import fs from 'node:fs';
import zlib from 'node:zlib';

/**
 * An archive's index (`<archive>.index.gz`): gzip-compressed lines of JSON. The first line is this
 * header, then one line per tar member in archive order, then the compressed size of every block
 * (each block is `blockSize` bytes of tar, compressed alone into one gzip member or zstd frame, so
 * decompression can start at any block).
 */
export interface IndexHeader {
  nbackupIndex: 1;
  format: 'gzip' | 'zstd';
  /** Tar bytes per compressed block (the last one may hold fewer). */
  blockSize: number;
  /** Size of the uncompressed tar stream. */
  tarSize: number;
  /** Size of the archive (all blocks compressed). */
  archiveSize: number;
  /** SHA-256 of the archive, hex. */
  sha256: string;
  members: number;
  blocks: number;
}

export const INDEX_SUFFIX = '.index.gz';

/** Longest header line accepted. */
const HEADER_LIMIT = 4096;

export function parseIndexHeader(line: string): IndexHeader {
  const h = JSON.parse(line) as Partial<IndexHeader>;
  const whole = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (h.nbackupIndex !== 1) throw new Error('not an nbackup index (version 1)');
  if (h.format !== 'gzip' && h.format !== 'zstd') throw new Error(`unknown archive format ${String(h.format)}`);
  for (const k of ['blockSize', 'tarSize', 'archiveSize', 'members', 'blocks'] as const) {
    if (!whole(h[k])) throw new Error(`index header: ${k} is not a whole number`);
  }
  if (h.blockSize === 0) throw new Error('index header: blockSize is 0');
  if (typeof h.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(h.sha256)) throw new Error('index header: sha256 is not 64 hex digits');
  return h as IndexHeader;
}

/** The header of an index file, decompressing only as far as its first line. */
export async function readIndexHeader(file: string): Promise<IndexHeader> {
  const input = fs.createReadStream(file, { start: 0, end: 64 * 1024 - 1 });
  const gunzip = zlib.createGunzip();
  input.pipe(gunzip);
  let text = '';
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      const nl = text.indexOf('\n');
      if (nl >= 0) return parseIndexHeader(text.slice(0, nl));
      if (text.length > HEADER_LIMIT) break;
    }
  } catch (err) {
    // A short read of a larger file ends the gzip stream early; only a missing header line counts.
    const nl = text.indexOf('\n');
    if (nl >= 0) return parseIndexHeader(text.slice(0, nl));
    throw err;
  } finally {
    input.destroy();
    gunzip.destroy();
  }
  throw new Error('index has no header line');
}

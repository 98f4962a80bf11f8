/**
 * Reading an index: lines are cut out of the decompressed stream wherever its chunks end (a name's
 * UTF-8 split between two chunks included), a line far longer than a chunk costs time in
 * proportion to its length, and a line over the limit or a last line without its newline is refused.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import zlib from 'node:zlib';
import { indexHead, memberLine, readIndex, type IndexMember } from '../../src/archive/index-format.js';
import type { IndexHeader } from '../../src/archive/index-header.js';

const MiB = 1024 * 1024;
const HEAD: IndexHeader = { nbackupIndex: 1, format: 'gzip', blockSize: MiB, tarSize: 2 * MiB, archiveSize: 300, sha256: 'a'.repeat(64), members: 0, blocks: 2 };

function members(n: number): IndexMember[] {
  const names = ['café', '日本語', '😀 smile', 'plain', 'ü/ö/ä'];
  return Array.from({ length: n }, (_, i) => ({
    offset: i * 512,
    type: i % 7 === 3 ? 'symlink' : 'file',
    size: i,
    mode: 0o644,
    mtime: 1_700_000_000 + i,
    name: i % 11 === 5 ? Buffer.from([0x66, 0xff, 0x80 + (i % 64)]) : Buffer.from(`dir/${names[i % names.length]}/${i}`),
    ...(i % 7 === 3 ? { link: Buffer.from(`→ ${names[i % names.length]}`) } : {}),
  }));
}

async function readAll(compressed: Buffer, piece: number): Promise<IndexMember[]> {
  const parts: Buffer[] = [];
  for (let at = 0; at < compressed.length; at += piece) parts.push(compressed.subarray(at, at + piece));
  const idx = await readIndex(Readable.from(parts));
  const out: IndexMember[] = [];
  for await (const m of idx.members) out.push(m);
  return out;
}

/** `n` MiB of '1' with no newline, after a header line: several identical gzip members, as cheap to build as to read. */
function longLine(mib: number): Readable {
  const one = zlib.gzipSync(Buffer.alloc(MiB, 0x31), { level: 1 });
  const head = zlib.gzipSync(`${JSON.stringify(HEAD)}\n{"blocks":[`);
  return Readable.from([head, ...Array.from({ length: mib }, () => one)]);
}

test('members come out whole however the stream is cut, UTF-8 names split across chunks included', async () => {
  const list = members(400);
  const body = zlib.gzipSync(list.map(memberLine).join(''));
  const compressed = Buffer.concat([indexHead({ ...HEAD, members: list.length }, [100, 200]), body]);
  for (const piece of [1, 3, 64, compressed.length]) {
    const got = await readAll(compressed, piece);
    assert.equal(got.length, list.length, `pieces of ${piece}`);
    for (let i = 0; i < list.length; i++) assert.deepEqual(got[i], list[i], `member ${i}, pieces of ${piece}`);
  }
});

test('a last line without its newline is refused', async () => {
  const list = members(3);
  const text = list.map(memberLine).join('').replace(/\n$/, '');
  const compressed = Buffer.concat([indexHead({ ...HEAD, members: 3 }, [100, 200]), zlib.gzipSync(text)]);
  await assert.rejects(readAll(compressed, 5), /ends inside a line/);
});

test('a 64 MiB line is read through in linear time (it took minutes when each chunk re-scanned the line)', { timeout: 20_000 }, async () => {
  await assert.rejects(readIndex(longLine(64)), /index: the index ends inside a line/);
});

test('a line over 128 MiB is refused', { timeout: 30_000 }, async () => {
  await assert.rejects(readIndex(longLine(130)), /index: an index line longer than 128 MB/);
});

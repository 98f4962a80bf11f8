import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { codecFor } from '../../../src/agent/pipeline/codecs.js';
import { IndexBuilder } from '../../../src/agent/pipeline/index-builder.js';
import { runPipeline, type PipelineResult } from '../../../src/agent/pipeline/pipeline.js';
import { readIndex, type IndexMember } from '../../../src/archive/index-format.js';
import type { IndexHeader } from '../../../src/archive/index-header.js';
import { makeOddTree } from '../../helpers/odd-tree.js';
import { makeTree } from '../../helpers/tree.js';

/**
 * The index the agent builds while packing, checked against the archive with GNU tar and gzip:
 * every member's span, cut out of the tar alone, is that member and nothing else; every block,
 * cut out of the archive alone, is one whole gzip member of the tar's bytes.
 */
const MiB = 1024 * 1024;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-index-'));
after(() => execFileSync('rm', ['-rf', work]));
let archive: string;
let tar: Buffer;
let result: PipelineResult;
let header: IndexHeader;
let blocks: number[];
let members: IndexMember[];

before(async () => {
  await makeTree(path.join(work, 'tree'));
  makeOddTree(path.join(work, 'odd'), 64 * MiB);
  archive = path.join(work, 'a.tar.gz');
  const fd = fs.openSync(archive, 'w');
  try {
    result = await runPipeline({
      sources: [path.join(work, 'tree'), path.join(work, 'odd')],
      exclude: [],
      codec: codecFor('gzip', 1),
      deliver: (out) => void fs.writeSync(fd, out),
      onWarning: (w) => assert.fail(`${w.path}: ${w.message}`),
    });
  } finally {
    fs.closeSync(fd);
  }
  assert.ok('parts' in result.index, 'an index was built');
  const idx = await readIndex(Readable.from(result.index.parts));
  ({ header, blocks } = idx);
  members = [];
  for await (const m of idx.members) members.push(m);
  tar = execFileSync('gzip', ['-dc', archive], { maxBuffer: 256 * MiB });
});

test('the header describes the archive: size, SHA-256, tar size, one entry per block, one line per member', () => {
  assert.equal(header.archiveSize, fs.statSync(archive).size);
  assert.equal(header.sha256, result.sha256.toString('hex'));
  assert.equal(header.tarSize, tar.length);
  assert.equal(header.format, 'gzip');
  assert.equal(blocks.length, Math.ceil(tar.length / header.blockSize));
  assert.ok(blocks.length >= 8, `${blocks.length} blocks`);
  assert.equal(members.length, result.pack.entries);
  const listed = execFileSync('tar', ['-tzf', archive], { maxBuffer: 64 * MiB }).toString('latin1').split('\n').filter(Boolean);
  assert.equal(members.length, listed.length, 'GNU tar lists as many members');
});

test('each member span, cut out of the tar and ended, is exactly that member for GNU tar', () => {
  const names = execFileSync('tar', ['-tf', '-', '--quoting-style=escape'], { input: tar, maxBuffer: 64 * MiB, env: { ...process.env, LC_ALL: 'C' } }).toString('latin1').split('\n').filter(Boolean);
  for (let i = 0; i < members.length; i++) {
    const m = members[i];
    const end = i + 1 < members.length ? members[i + 1].offset : tar.length;
    const slice = Buffer.concat([tar.subarray(m.offset, end), Buffer.alloc(1024)]);
    const out = execFileSync('tar', ['-tvf', '-', '--quoting-style=escape', '--utc'], { input: slice, env: { ...process.env, LC_ALL: 'C' } }).toString('latin1');
    const lines = out.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `member ${i} span holds one member: ${out}`);
    assert.ok(lines[0].endsWith(names[i]) || lines[0].includes(` ${names[i]} -> `) || lines[0].includes(` ${names[i]} link to `), `member ${i}: ${lines[0]} is ${names[i]}`);
    const kind = { file: '-', hardlink: 'h', symlink: 'l', directory: 'd', fifo: 'p', 'char-device': 'c', 'block-device': 'b' }[m.type];
    assert.equal(lines[0][0] === '-' && m.type === 'hardlink' ? 'h' : lines[0][0], kind, `member ${i} type ${m.type}: ${lines[0]}`);
    assert.equal((parseInt(lines[0].slice(1, 10).replace(/[^-]/g, '1').replace(/-/g, '0'), 2) & 0o777), m.mode & 0o777, `member ${i} mode`);
  }
});

test('names are the archived bytes (not UTF-8 too) and sizes are the real sizes, sparse file included', () => {
  const byName = new Map(members.map((m) => [m.name.toString('latin1'), m]));
  const cafe = [...byName.keys()].find((k) => k.endsWith('/caf\xe9.txt') && k.includes('odd'));
  assert.ok(cafe, 'the Latin-1 name is there as bytes');
  assert.equal(byName.get(cafe)!.size, 'latin-1 name\n'.length);
  const sparse = [...byName.values()].find((m) => m.name.toString().endsWith('odd/sparse.img'))!;
  assert.equal(sparse.size, 64 * MiB);
  const link = [...byName.values()].find((m) => m.type === 'symlink' && m.name.toString('latin1').endsWith('link-\xe9'))!;
  assert.equal(link.link!.toString('latin1'), './caf\xe9.txt');
  const st = fs.statSync(path.join(work, 'tree', 'random-3MiB.bin'));
  const random = [...byName.values()].find((m) => m.name.toString().endsWith('tree/random-3MiB.bin'))!;
  assert.equal(random.size, st.size);
  assert.equal(random.mtime, st.mtimeMs / 1000);
});

test('each block, cut out of the archive alone, is one gzip member holding its block of the tar', () => {
  let at = 0;
  for (let k = 0; k < blocks.length; k++) {
    const piece = fs.readFileSync(archive).subarray(at, at + blocks[k]);
    const out = execFileSync('gzip', ['-dc'], { input: piece, maxBuffer: 4 * MiB });
    assert.ok(out.equals(tar.subarray(k * header.blockSize, (k + 1) * header.blockSize)), `block ${k}`);
    at += blocks[k];
  }
  assert.equal(at, header.archiveSize);
});

test('an index that outgrows its memory is given up, saying why, and the backup does not need it', async () => {
  const b = new IndexBuilder(2000);
  for (let i = 0; i < 5000; i++) b.member({ offset: i * 512, type: 'file', size: 0, mode: 0o644, mtime: 1, name: Buffer.from(`f${i}`) });
  b.block(10);
  assert.equal(await b.finish({ format: 'gzip', blockSize: MiB, tarSize: 1, archiveSize: 10, sha256: '0'.repeat(64) }), null);
  assert.match(b.dropped!, /outgrew/);
});

test('a damaged index is refused with a reason, never half-read', async () => {
  const parts = 'parts' in result.index ? result.index.parts : [];
  const open = async (bufs: Buffer[]) => {
    const idx = await readIndex(Readable.from(bufs));
    for await (const _ of idx.members);
  };
  await assert.rejects(open(parts.slice(0, 1)), /members listed, the header says/);
  await assert.rejects(open([Buffer.from('not gzip')]), /index|header/i);
  const zlib = await import('node:zlib');
  const head = { ...header, archiveSize: header.archiveSize + 1 };
  await assert.rejects(open([zlib.gzipSync(`${JSON.stringify(head)}\n{"blocks":[${blocks.join(',')}]}\n`)]), /do not add up/);
  const swapped = zlib.gzipSync(`[${members[1].offset},"0",1,420,1,"a"]\n[${members[0].offset},"0",1,420,1,"b"]\n`);
  await assert.rejects(open([parts[0], swapped]), /out of order/);
});

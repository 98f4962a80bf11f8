import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DT, listDirectory, packDirents, type DirListing } from '../../../src/agent/pipeline/dir-listing.js';
import { scanWithRuns } from '../../../src/agent/pipeline/scanner.js';
import { loadAddon } from '../../../src/native/addons.js';
import { fsAddonOrAllowed } from '../../helpers/addon.js';

/**
 * Directory listings in two compact buffers (src/native/list-dir.c, dir-listing.ts): the native
 * listing is byte for byte the readdirSync one packed the same way — names of any bytes, every
 * file type, Buffer.compare's order — errors carry the errno's code, and the scanner hands runs
 * of files on as slices of the listing, never across a name an exclude leaves out.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-list-'));
const dir = path.join(root, 'd');
let sock: net.Server;
after(() => {
  sock?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

const NAMES: Buffer[] = [
  Buffer.from('a'),
  Buffer.from('ab'),
  Buffer.from('B'),
  Buffer.from('a\xff', 'latin1'), // not UTF-8
  Buffer.from('é'),
  Buffer.from('日本語.txt'),
  Buffer.from('x'.repeat(255)),
  Buffer.from(' lead space'),
  Buffer.from('-dash'),
  Buffer.from('.hidden'),
  Buffer.from('..dots'),
  Buffer.from('new\nline'),
];

before(async () => {
  fs.mkdirSync(dir);
  const at = (n: Buffer | string): Buffer => Buffer.concat([Buffer.from(dir + '/'), Buffer.from(n)]);
  for (const n of NAMES) fs.writeFileSync(at(n), 'x');
  fs.mkdirSync(at('sub'));
  fs.symlinkSync('a', at('link'));
  execFileSync('mkfifo', [at('fifo').toString()]);
  sock = net.createServer();
  await new Promise<void>((resolve) => sock.listen(at('sock').toString(), resolve));
});

function entries(l: DirListing): { name: string; type: number }[] {
  const out: { name: string; type: number }[] = [];
  let pos = 0;
  for (let i = 0; i < l.types.length; i++) {
    const end = l.names.indexOf(0, pos);
    assert.ok(end >= 0, 'every name is NUL-ended');
    out.push({ name: l.names.subarray(pos, end).toString('latin1'), type: l.types[i] });
    pos = end + 1;
  }
  assert.equal(pos, l.names.length, 'nothing after the last name');
  return out;
}

const readdirListing = (p: string): DirListing => packDirents(fs.readdirSync(Buffer.from(p), { encoding: 'buffer', withFileTypes: true }) as unknown as fs.Dirent[]);

test('the native listing equals readdirSync packed: names of any bytes, every type, byte order', (t) => {
  const addon = fsAddonOrAllowed(loadAddon<{ listDir: unknown }>('nbackup_fs'), t);
  const got = entries(listDirectory(Buffer.from(dir)));
  assert.deepEqual(got, entries(readdirListing(dir)));
  // Through a descriptor open on the folder: the same, twice (it is read from the start, left open).
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    assert.deepEqual(entries(listDirectory(Buffer.from(dir), fd)), got);
    assert.deepEqual(entries(listDirectory(Buffer.from(dir), fd)), got);
    assert.ok(fs.fstatSync(fd).isDirectory());
  } finally {
    fs.closeSync(fd);
  }
  const sorted = [...NAMES, 'sub', 'link', 'fifo', 'sock'].map((n) => Buffer.from(n)).sort(Buffer.compare);
  assert.deepEqual(
    got.map((e) => e.name),
    sorted.map((n) => n.toString('latin1')),
  );
  const type = (n: string): number => got.find((e) => e.name === n)!.type;
  if (addon) {
    assert.deepEqual([type('a'), type('sub'), type('link'), type('fifo'), type('sock')], [DT.file, DT.dir, DT.symlink, DT.fifo, DT.socket]);
  }
});

test('an empty directory, a missing one, a file: empty buffers, or the errno code', () => {
  const empty = path.join(root, 'empty');
  fs.mkdirSync(empty);
  const l = listDirectory(Buffer.from(empty));
  assert.equal(l.names.length, 0);
  assert.equal(l.types.length, 0);
  assert.throws(() => listDirectory(Buffer.from(path.join(root, 'missing'))), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && /ENOENT/.test(e.message));
  assert.throws(() => listDirectory(Buffer.from(path.join(dir, 'a'))), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR');
});

test('runs are slices of the listing in order, cut at a name an exclude leaves out and every 1024 names', () => {
  const big = path.join(root, 'big');
  fs.mkdirSync(big);
  for (let i = 0; i < 2500; i++) fs.writeFileSync(path.join(big, `f${String(i).padStart(4, '0')}`), '');
  fs.mkdirSync(path.join(big, 'f1000-dir'));
  const runs: string[][] = [];
  const single: string[] = [];
  for (const item of scanWithRuns([big], { exclude: ['f0500', 'f2*'], onWarning: (w) => assert.fail(`${w.path}: ${w.message}`) })) {
    if (item.type === 'run') runs.push(item.names.toString('latin1').split('\0').slice(0, -1));
    else single.push(item.name.toString());
  }
  const files = runs.flat();
  const expected = Array.from({ length: 2000 }, (_, i) => `f${String(i).padStart(4, '0')}`).filter((n) => n !== 'f0500');
  assert.deepEqual(files, expected, 'every file once, in byte order, the excluded ones left out');
  assert.ok(runs.every((r) => r.length <= 1024), `run lengths ${runs.map((r) => r.length).join(', ')}`);
  assert.ok(!runs.some((r) => r.includes('f0499') && r.includes('f0501')), 'no run spans the excluded name');
  assert.ok(!runs.some((r) => r.includes('f1000') && r.includes('f1001')), 'no run spans the folder between them');
  assert.deepEqual(single, [big.slice(1), `${big.slice(1)}/f1000-dir`]);
});

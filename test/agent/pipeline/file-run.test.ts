import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { memberLine } from '../../../src/archive/index-format.js';
import { LINE_BYTES, RUN, nameAt, runPacker, type FileRun } from '../../../src/agent/pipeline/file-run.js';
import { scanSources, scanWithRuns, type ScanWarning } from '../../../src/agent/pipeline/scanner.js';
import { TarPacker } from '../../../src/agent/pipeline/tar-packer.js';
import { fsAddonOrAllowed } from '../../helpers/addon.js';

/** Names as a run's NUL-ended list (the scanner hands a slice of its directory listing). */
function joinNames(names: readonly Buffer[]): Buffer {
  return Buffer.concat(names.flatMap((n) => [n, Buffer.alloc(1)]));
}

/**
 * Runs of small files packed by one native call (src/native/pack-files.c): the tar and the index
 * lines must be byte for byte those the one-by-one way writes, whatever the files are, and what
 * the native call cannot do it hands back.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-run-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** The run packer, or null when the addon may be absent (see fsAddonOrAllowed). */
function packerOrSkip(t: { diagnostic(m: string): void }): ReturnType<typeof runPacker> {
  return fsAddonOrAllowed(runPacker(), t);
}

interface Packed {
  tar: Buffer;
  index: string;
  warnings: ScanWarning[];
  files: number;
  entries: number;
  bytesRead: number;
}

/** Packs `src` with blocks of `bs` bytes, one entry at a time or with runs. */
async function pack(src: string, bs: number, runs: boolean, between?: (item: { type: string; name?: Buffer; dirName?: Buffer }) => void): Promise<Packed> {
  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  let index = '';
  const packer = new TarPacker(
    bs,
    { take: () => Buffer.alloc(bs) },
    { push: (b) => void blocks.push(Buffer.from(b)) },
    (w) => warnings.push(w),
    (m) => (index += memberLine(m)),
    (text) => (index += text.toString('utf8')),
  );
  const scan = { exclude: [], onWarning: (w: ScanWarning) => warnings.push(w) };
  for (const item of runs ? scanWithRuns([src], scan) : scanSources([src], scan)) {
    between?.(item);
    await (item.type === 'run' ? packer.addRun(item) : packer.add(item));
  }
  await packer.finish();
  const { files, entries, bytesRead } = packer.stats;
  return { tar: Buffer.concat(blocks), index, warnings, files, entries, bytesRead };
}

const latin1 = (s: string) => Buffer.from(s, 'latin1');

test('runs give the same tar and index, byte for byte, as one entry at a time; GNU tar compares the tree equal', async (t) => {
  if (!packerOrSkip(t)) return;
  const src = path.join(root, 'tree');
  const long = path.join(src, 'a'.repeat(60), 'b'.repeat(50));
  fs.mkdirSync(long, { recursive: true });
  for (let i = 0; i < 120; i++) {
    // Sizes around records and the 64 KiB block; names a long directory makes splittable.
    const size = i === 5 ? 200_000 : (i * 977) % 9000;
    fs.writeFileSync(path.join(i % 3 === 0 ? long : src, `f${String(i).padStart(3, '0')}`), Buffer.alloc(size, i));
  }
  const odd = ['quote"back\\slash', 'tab\there', 'ctl\x01\x1f', 'del\x7f', 'ünïcode', 'n'.repeat(101), `${'x'.repeat(99)}`];
  for (const n of odd) fs.writeFileSync(path.join(src, n), n);
  fs.writeFileSync(Buffer.concat([Buffer.from(src), latin1('/caf\xe9-\xff')]), 'not UTF-8');
  fs.writeFileSync(path.join(src, 'empty'), '');
  fs.writeFileSync(path.join(src, 'linked'), 'two names');
  fs.linkSync(path.join(src, 'linked'), path.join(src, 'linked2'));
  const sparse = fs.openSync(path.join(src, 'sparse'), 'w');
  fs.writeSync(sparse, 'end', 3 * 1024 * 1024);
  fs.closeSync(sparse);
  fs.symlinkSync('empty', path.join(src, 'sym'));
  fs.mkdirSync(path.join(src, 'sub'));
  fs.writeFileSync(path.join(src, 'sub', 'inner'), 'inner');
  // Whole seconds: GNU tar --compare wants sub-second times of members with PAX headers in a record.
  execFileSync('find', [src, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
  fs.utimesSync(path.join(src, 'f001'), 1_600_000_000, 1_600_000_123);

  for (const bs of [64 * 1024, 1024 * 1024]) {
    const one = await pack(src, bs, false);
    const runs = await pack(src, bs, true);
    assert.deepEqual(runs.warnings, []);
    assert.equal(runs.files, one.files);
    assert.equal(runs.entries, one.entries);
    assert.equal(runs.bytesRead, one.bytesRead);
    assert.equal(runs.index, one.index, `index lines, block size ${bs}`);
    assert.ok(runs.tar.equals(one.tar), `tar bytes, block size ${bs}`);
    // Every member is in the index, and GNU tar finds the archive equal to the tree.
    const tar = path.join(root, `tree-${bs}.tar`);
    fs.writeFileSync(tar, runs.tar);
    assert.equal(runs.index.trim().split('\n').length, execFileSync('tar', ['-tf', tar]).toString('latin1').trim().split('\n').length);
    execFileSync('tar', ['--compare', '-f', tar, '-C', '/']);
  }
});

test('the native call hands back what it cannot pack: links, holes, no room, odd names, vanished files, a lost directory', (t) => {
  const packRun = packerOrSkip(t);
  if (!packRun) return;
  const dir = path.join(root, 'hand-back');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'a'), 'aaaa');
  fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(5000, 1));
  fs.writeFileSync(path.join(dir, 'l1'), 'x');
  fs.linkSync(path.join(dir, 'l1'), path.join(dir, 'l2'));
  fs.writeFileSync(path.join(dir, 'é'), 'é');
  const run = (names: string[]): FileRun => ({ type: 'run', dir: Buffer.from(dir), dirName: Buffer.from('hb'), names: joinNames(names.map((n) => Buffer.from(n))) });
  const prefix = Buffer.from('hb/');
  const block = Buffer.alloc(4096);
  const lines = Buffer.alloc(LINE_BYTES);

  const plain = packRun(run(['a', 'a']), prefix, 0, block, 512, 10_000, lines);
  assert.equal(plain.status, RUN.done);
  assert.deepEqual([plain.files, plain.pos, plain.bytesRead], [2, 512 + 2 * 1024, 8]);
  const st = fs.statSync(path.join(dir, 'a'));
  const line = memberLine({ offset: 10_512, type: 'file', size: 4, mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000), name: Buffer.from('hb/a') });
  assert.equal(lines.subarray(0, plain.lineBytes).toString(), line + line.replace('10512', '11536'));
  assert.equal(block.subarray(1024, 1028).toString(), 'aaaa');

  const takes: [string, boolean][] = [['big', true], ['l2', true], ['é', false], ['missing', false]];
  for (const [name, open] of takes) {
    const r = packRun(run(['a', name, 'a']), prefix, 0, block, 0, 0, lines);
    try {
      assert.equal(r.status, RUN.take, name);
      assert.equal(r.files, 1, `${name}: the file before it is packed`);
      assert.equal(nameAt(run(['a', name, 'a']), r.at).base.toString(), name);
      assert.equal(r.fd >= 0, open, `${name}: ${open ? 'handed back open' : 'not opened'}`);
    } finally {
      if (r.fd >= 0) fs.closeSync(r.fd);
    }
  }
  // With room for the big file it is packed; without room for an index line the call stops.
  assert.equal(packRun(run(['big']), prefix, 0, Buffer.alloc(8192), 0, 0, lines).status, RUN.done);
  const full = packRun(run(['a', 'a']), prefix, 0, block, 0, 0, Buffer.alloc(140));
  assert.deepEqual([full.status, full.files], [RUN.lines, 1]);
  const gone = packRun({ ...run(['a']), dir: Buffer.from(path.join(dir, 'nowhere')) }, prefix, 0, block, 0, 0, lines);
  assert.deepEqual([gone.status, gone.files, gone.at], [RUN.noDir, 0, 0]);
  assert.throws(() => packRun(run(['a']), prefix, 0, block, 5000, 0, lines), /within it/);
});

test('files that vanish after the scan are warned about, a lost directory too, and the rest is archived', async (t) => {
  if (!packerOrSkip(t)) return;
  const src = path.join(root, 'vanish');
  fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
  for (const n of ['a', 'b', 'c']) fs.writeFileSync(path.join(src, n), n);
  for (const n of ['x', 'y']) fs.writeFileSync(path.join(src, 'sub', n), n);
  // Each run comes once its directory is listed: the files go between the listing and the reads.
  const r = await pack(src, 64 * 1024, true, (item) => {
    if (item.type !== 'run') return;
    if (item.dirName!.toString().endsWith('vanish')) fs.rmSync(path.join(src, 'b'));
    if (item.dirName!.toString().endsWith('sub')) fs.rmSync(path.join(src, 'sub'), { recursive: true });
  });
  const said = r.warnings.map((w) => `${path.basename(w.path)}: ${w.message}`).sort();
  assert.deepEqual(said, ['b: vanished before it could be read; skipped', 'x: vanished before it could be read; skipped', 'y: vanished before it could be read; skipped']);
  const tar = path.join(root, 'vanish.tar');
  fs.writeFileSync(tar, r.tar);
  const members = execFileSync('tar', ['-tf', tar]).toString().trim().split('\n').map((m) => m.slice(src.length - 1));
  assert.deepEqual(members, ['/', '/a', '/c', '/sub/']);
});

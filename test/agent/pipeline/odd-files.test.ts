import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { scanSources, type ScanWarning } from '../../../src/agent/pipeline/scanner.js';
import { TarPacker } from '../../../src/agent/pipeline/tar-packer.js';
import { assertTreesEqual } from '../../helpers/compare.js';
import { allocatedBytes, makeOddTree, type OddTree } from '../../helpers/odd-tree.js';

/**
 * Scanner and packer on the files most easily lost (names that are not UTF-8, a path longer than
 * PATH_MAX, a sparse file, a source that is a symlink), checked with GNU tar.
 */
const BS = 1024 * 1024;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-odd-'));
// rm(1) removes paths longer than PATH_MAX, which fs.rm cannot.
after(() => execFileSync('rm', ['-rf', work]));
let tree: OddTree;
let tar: string;
let warnings: ScanWarning[];

/** Packs `sources` into a tar file on disk (never in memory: a file read whole would be large). */
async function packTo(file: string, sources: string[]): Promise<{ warnings: ScanWarning[]; notices: ScanWarning[] }> {
  const found: ScanWarning[] = [];
  const notices: ScanWarning[] = [];
  const fd = fs.openSync(file, 'w');
  try {
    const packer = new TarPacker(BS, { take: () => Buffer.alloc(BS) }, { push: (b) => void fs.writeSync(fd, b) }, (w) => found.push(w));
    for (const e of scanSources(sources, { exclude: [], onWarning: (w) => found.push(w), onNotice: (n) => notices.push(n) })) await packer.add(e);
    await packer.finish();
  } finally {
    fs.closeSync(fd);
  }
  return { warnings: found, notices };
}

/** Member names exactly as GNU tar reads them (bytes, one per line). */
function memberNames(archive: string): Buffer[] {
  const out = execFileSync('tar', ['-tf', archive, '--quoting-style=literal'], { env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 64 << 20 });
  const names: Buffer[] = [];
  for (let at = 0; at < out.length; ) {
    const nl = out.indexOf(0x0a, at);
    names.push(out.subarray(at, nl));
    at = nl + 1;
  }
  return names;
}

const rootMember = (): string => tree.root.replace(/^\//, '');

before(async () => {
  tree = makeOddTree(path.join(work, 'src'));
  tar = path.join(work, 'odd.tar');
  ({ warnings } = await packTo(tar, [tree.root]));
});

test('nothing is skipped: no warning, and every odd name is in the archive byte for byte', () => {
  assert.deepEqual(warnings, []);
  const names = memberNames(tar).map((n) => n.toString('latin1'));
  for (const b of tree.byteNames) {
    const want = Buffer.concat([Buffer.from(`${rootMember()}/`), b]).toString('latin1');
    assert.ok(names.some((n) => n === want || n === `${want}/`), `missing ${JSON.stringify(want)}`);
  }
  const deep = `${rootMember()}/${tree.deepFile}`;
  assert.ok(deep.length > 4096, `the deep path is ${deep.length} bytes`);
  assert.ok(names.includes(deep), 'the file beyond PATH_MAX is archived under its full name');
});

test('GNU tar restores the tree with the same name bytes, in the C and the UTF-8 locale (the deep chain aside)', async () => {
  for (const locale of ['C', 'C.UTF-8']) {
    const out = fs.mkdtempSync(path.join(work, `restore-${locale}-`));
    // GNU tar cannot create paths longer than PATH_MAX itself: the deep chain is checked below.
    execFileSync('tar', ['-xpf', tar, '-C', out, '--exclude=deep'], { env: { ...process.env, LC_ALL: locale } });
    await assertTreesEqual(tree.root, path.join(out, tree.root), { excludedPaths: ['deep'] });
  }
});

test('the part of the deep chain GNU tar can write back is intact, down to the file beyond PATH_MAX', async () => {
  const out = fs.mkdtempSync(path.join(work, 'deep-'));
  const keep = 10;
  const strip = rootMember().split('/').length + 1 + keep;
  execFileSync('tar', ['-xpf', tar, '-C', out, `--strip-components=${strip}`]);
  const sourceSubtree = path.join(tree.root, 'deep', ...tree.deepDirs.slice(0, keep));
  await assertTreesEqual(sourceSubtree, out);
  // And the bottom file's bytes, read straight from the archive by its full name.
  const content = execFileSync('tar', ['-xOf', tar, `${rootMember()}/${tree.deepFile}`], { encoding: 'utf8' });
  assert.equal(content, 'at the bottom\n');
});

test('a sparse file is archived without its holes and GNU tar restores it sparse', async () => {
  assert.ok(fs.statSync(tar).size < 16 * 1024 * 1024, `archive is ${fs.statSync(tar).size} bytes for a ${tree.sparse.size}-byte sparse file`);
  const out = fs.mkdtempSync(path.join(work, 'sparse-'));
  execFileSync('tar', ['-xpf', tar, '-C', out, `${rootMember()}/${tree.sparse.rel}`]);
  const restored = path.join(out, tree.root, tree.sparse.rel);
  assert.equal(fs.statSync(restored).size, tree.sparse.size);
  assert.ok(allocatedBytes(restored) < 8 * 1024 * 1024, `restored file uses ${allocatedBytes(restored)} bytes on disk`);
  execFileSync('cmp', [path.join(tree.root, tree.sparse.rel), restored]);
});

test('a source that is a symlink to a directory is backed up as that tree, under the name given, with a notice', async () => {
  const link = path.join(work, 'current');
  const target = fs.mkdtempSync(path.join(work, 'release-'));
  fs.writeFileSync(path.join(target, 'app.conf'), 'setting = 1\n');
  fs.symlinkSync(target, link);
  fs.symlinkSync('app.conf', path.join(target, 'inner-link'));
  const archive = path.join(work, 'link.tar');
  const { warnings: w, notices } = await packTo(archive, [link]);
  assert.deepEqual(w, []);
  assert.equal(notices.length, 1);
  assert.match(notices[0].message, /symlink to .*release-/);
  const names = memberNames(archive).map((n) => n.toString());
  const base = link.replace(/^\//, '');
  assert.deepEqual(names.sort(), [`${base}/`, `${base}/app.conf`, `${base}/inner-link`].sort());
  const out = fs.mkdtempSync(path.join(work, 'link-out-'));
  execFileSync('tar', ['-xpf', archive, '-C', out]);
  assert.ok(fs.lstatSync(path.join(out, link)).isDirectory(), 'restored as the directory it pointed to');
  assert.equal(fs.readlinkSync(path.join(out, link, 'inner-link')), 'app.conf', 'links inside stay links');
});

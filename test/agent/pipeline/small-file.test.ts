import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { scanSources, type ScanWarning } from '../../../src/agent/pipeline/scanner.js';
import { smallFileReader } from '../../../src/agent/pipeline/small-file.js';
import { TarPacker } from '../../../src/agent/pipeline/tar-packer.js';
import { fsAddonOrAllowed } from '../../helpers/addon.js';

/**
 * The packer's one-call reader for small files (src/native/read-small.c): what it reads itself,
 * what it hands back to the general way, and archives made through it checked with GNU tar.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-small-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** The reader, or null when the addon may be absent (see fsAddonOrAllowed). */
function reader(t: { diagnostic(m: string): void }): ReturnType<typeof smallFileReader> {
  return fsAddonOrAllowed(smallFileReader(), t);
}

function closeIfOpen(out: ReturnType<NonNullable<ReturnType<typeof smallFileReader>>>): void {
  if (typeof out === 'object' && 'fd' in out) fs.closeSync(out.fd);
}

test('a small regular file is read whole, zero-padded to 512, with its metadata', (t) => {
  const read = reader(t);
  if (!read) return;
  const f = path.join(root, 'plain.txt');
  fs.writeFileSync(f, 'hello small file');
  fs.chmodSync(f, 0o640);
  fs.utimesSync(f, 1_600_000_000, 1_600_000_123);
  const block = Buffer.alloc(4096, 0xee);
  const out = read(Buffer.from(f), block, 1000, 2000);
  assert.ok(typeof out === 'object' && 'read' in out, JSON.stringify(out));
  const st = fs.statSync(f);
  assert.deepEqual(out.read, { mode: st.mode, uid: st.uid, gid: st.gid, size: 16, mtime: 1_600_000_123, changed: false, sizeAfter: 16 });
  assert.equal(block.subarray(1000, 1016).toString(), 'hello small file');
  assert.ok(block.subarray(1016, 1512).every((b) => b === 0), 'padding is zeros');
  assert.ok(block.subarray(1512).every((b) => b === 0xee) && block.subarray(0, 1000).every((b) => b === 0xee), 'nothing outside the padded data is touched');
});

test('anything unusual goes back to the general way: open failures, and an open descriptor otherwise', (t) => {
  const read = reader(t);
  if (!read) return;
  const block = Buffer.alloc(8192);
  const dir = path.join(root, 'unusual');
  fs.mkdirSync(dir);
  const at = (n: string) => Buffer.from(path.join(dir, n));
  fs.writeFileSync(path.join(dir, 'target'), 'x');
  fs.symlinkSync('target', path.join(dir, 'link'));
  fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(3000, 1));
  fs.writeFileSync(path.join(dir, 'linked'), 'two names');
  fs.linkSync(path.join(dir, 'linked'), path.join(dir, 'linked2'));
  execFileSync('mkfifo', [path.join(dir, 'fifo')]);
  const sparse = path.join(dir, 'sparse');
  const fd = fs.openSync(sparse, 'w');
  fs.writeSync(fd, 'end', 5000); // the first 4 KiB a hole: 5003 bytes, one block allocated
  fs.closeSync(fd);

  assert.equal(read(at('missing'), block, 0, 4096), 'open-failed');
  assert.equal(read(at('link'), block, 0, 4096), 'open-failed', 'a symlink is never followed');
  for (const [name, room] of [['big', 2560], ['linked', 4096], ['fifo', 4096], ['sparse', 8192]] as const) {
    const out = read(at(name), block, 0, room);
    try {
      assert.ok(typeof out === 'object' && 'fd' in out, `${name}: ${JSON.stringify(out)}`);
      assert.ok(fs.fstatSync(out.fd).ino === fs.lstatSync(at(name)).ino, `${name}: the descriptor is the file's`);
    } finally {
      closeIfOpen(out);
    }
  }
  // The same large file with room for it (3000 bytes padded to 3072) is read.
  const big = read(at('big'), block, 0, 3072);
  assert.ok(typeof big === 'object' && 'read' in big && big.read.size === 3000);
  assert.throws(() => read(at('big'), block, 6000, 4096), /range within it/, 'a range past the block is refused');
});

test('many small files, names that need PAX records, packed across small blocks: GNU tar restores them exactly', async (t) => {
  if (!reader(t)) return;
  const src = path.join(root, 'tree');
  const latin1 = (s: string) => Buffer.from(s, 'latin1');
  const expected = new Map<string, Buffer>();
  for (let d = 0; d < 4; d++) {
    const dir = path.join(src, `d${d}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 60; i++) {
      // Sizes around the 512-byte records and the 4 KiB block, long names every few files.
      const size = (i * 97 + d * 13) % 1500;
      const name = i % 7 === 0 ? `${'n'.repeat(120)}-${i}` : i % 11 === 0 ? `ünïcode-${i}` : `f${i}`;
      const data = Buffer.alloc(size, (i + d) & 0xff);
      fs.writeFileSync(path.join(dir, name), data);
      expected.set(`d${d}/${name}`, data);
    }
  }
  const odd = Buffer.concat([Buffer.from(src), latin1('/caf\xe9-\xff.txt')]);
  fs.writeFileSync(odd, 'not UTF-8');

  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  const BS = 4096;
  const packer = new TarPacker(BS, { take: () => Buffer.alloc(BS) }, { push: (b) => void blocks.push(Buffer.from(b)) }, (w) => warnings.push(w));
  for (const e of scanSources([src], { exclude: [], onWarning: (w) => warnings.push(w) })) {
    const wait = packer.add(e);
    if (wait) await wait;
  }
  await packer.finish();
  assert.deepEqual(warnings, []);
  assert.equal(packer.stats.files, expected.size + 1);
  const tar = path.join(root, 'tree.tar');
  fs.writeFileSync(tar, Buffer.concat(blocks));
  const out = fs.mkdtempSync(path.join(root, 'x-'));
  execFileSync('tar', ['-xpf', tar, '-C', out]);
  for (const [rel, data] of expected) {
    const restored = path.join(out, src.slice(1), rel);
    assert.ok(fs.readFileSync(restored).equals(data), rel);
    assert.equal(fs.statSync(restored).mtimeMs - (fs.statSync(restored).mtimeMs % 1000), fs.statSync(path.join(src, rel)).mtimeMs - (fs.statSync(path.join(src, rel)).mtimeMs % 1000), `${rel} mtime`);
  }
  const restoredOdd = Buffer.concat([Buffer.from(path.join(out, src.slice(1))), latin1('/caf\xe9-\xff.txt')]);
  assert.equal(fs.readFileSync(restoredOdd, 'utf8'), 'not UTF-8');
  // GNU tar's own view agrees on the member count (dirs + files).
  const members = execFileSync('tar', ['-tf', tar]).toString('latin1').trim().split('\n');
  assert.equal(members.length, 1 + 4 + expected.size + 1);
});

test('a small file swapped for a symlink after the scan is skipped with a warning, not followed', async (t) => {
  if (!reader(t)) return;
  const src = path.join(root, 'swap');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'a.txt'), 'a');
  fs.writeFileSync(path.join(root, 'secret'), 'must not be archived');
  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  const packer = new TarPacker(4096, { take: () => Buffer.alloc(4096) }, { push: (b) => void blocks.push(Buffer.from(b)) }, (w) => warnings.push(w));
  for (const e of scanSources([src], { exclude: [], onWarning: (w) => warnings.push(w) })) {
    if (e.name.toString().endsWith('a.txt')) {
      fs.rmSync(e.access);
      fs.symlinkSync(path.join(root, 'secret'), e.access);
    }
    await packer.add(e);
  }
  await packer.finish();
  assert.ok(warnings.some((w) => /replaced by a symlink/.test(w.message)), JSON.stringify(warnings));
  assert.ok(!Buffer.concat(blocks).includes('must not be archived'));
});

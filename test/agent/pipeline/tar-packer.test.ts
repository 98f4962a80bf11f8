import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { scanSources, type ScanWarning } from '../../../src/agent/pipeline/scanner.js';
import { TarPacker } from '../../../src/agent/pipeline/tar-packer.js';

const BS = 64 * 1024;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-packer-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** Packs `src` into a plain tar file, calling `onBlock(n)` as each block is handed over. */
async function pack(src: string, onBlock: (n: number) => void = () => {}): Promise<{ tar: string; warnings: ScanWarning[] }> {
  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  const packer = new TarPacker(
    BS,
    { take: () => Buffer.alloc(BS) },
    {
      push: (b) => {
        blocks.push(Buffer.from(b));
        onBlock(blocks.length);
      },
    },
    (w) => warnings.push(w),
  );
  for (const e of scanSources([src], { exclude: [], onWarning: (w) => warnings.push(w) })) await packer.add(e);
  await packer.finish();
  const tar = path.join(root, `${path.basename(src)}-${Date.now()}.tar`);
  fs.writeFileSync(tar, Buffer.concat(blocks));
  return { tar, warnings };
}

function gnuExtract(tar: string): string {
  const out = fs.mkdtempSync(path.join(root, 'x-'));
  execFileSync('tar', ['-xpf', tar, '-C', out]);
  return out;
}

test('a file that shrinks while being read is padded with zeros and warned about; archive stays valid', async () => {
  const src = path.join(root, 'shrink');
  fs.mkdirSync(src);
  const f = path.join(src, 'big.bin');
  fs.writeFileSync(f, Buffer.alloc(5 * BS, 0x61));
  fs.writeFileSync(path.join(src, 'z-after.txt'), 'still here');
  const { tar, warnings } = await pack(src, (n) => {
    if (n === 1) fs.truncateSync(f, 100);
  });
  assert.ok(warnings.some((w) => w.path === f && /shrank/.test(w.message)), JSON.stringify(warnings));
  const out = gnuExtract(tar);
  const restored = path.join(out, src.slice(1));
  assert.equal(fs.statSync(path.join(restored, 'big.bin')).size, 5 * BS);
  assert.equal(fs.readFileSync(path.join(restored, 'z-after.txt'), 'utf8'), 'still here');
});

test('a file that grows while being read is cut at its header size and warned about', async () => {
  const src = path.join(root, 'grow');
  fs.mkdirSync(src);
  const f = path.join(src, 'log.bin');
  fs.writeFileSync(f, Buffer.alloc(3 * BS, 0x62));
  const { tar, warnings } = await pack(src, (n) => {
    if (n === 1) fs.appendFileSync(f, Buffer.alloc(BS, 0x63));
  });
  assert.ok(warnings.some((w) => w.path === f && /changed while being read/.test(w.message)), JSON.stringify(warnings));
  const out = gnuExtract(tar);
  const data = fs.readFileSync(path.join(out, src.slice(1), 'log.bin'));
  assert.equal(data.length, 3 * BS);
  assert.ok(data.every((b) => b === 0x62));
});

test('a file that vanishes between scan and read is skipped with a warning', async () => {
  const src = path.join(root, 'vanish');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'a.txt'), 'a');
  fs.writeFileSync(path.join(src, 'b.txt'), 'b');
  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  const packer = new TarPacker(BS, { take: () => Buffer.alloc(BS) }, { push: (b) => void blocks.push(Buffer.from(b)) }, (w) => warnings.push(w));
  for (const e of scanSources([src], { exclude: [], onWarning: (w) => warnings.push(w) })) {
    if (e.name.toString().endsWith('a.txt')) fs.rmSync(e.access);
    await packer.add(e);
  }
  await packer.finish();
  assert.ok(warnings.some((w) => /vanished/.test(w.message)));
  const tar = path.join(root, 'vanish.tar');
  fs.writeFileSync(tar, Buffer.concat(blocks));
  const list = execFileSync('tar', ['-tf', tar], { encoding: 'utf8' });
  assert.ok(!list.includes('a.txt'));
  assert.ok(list.includes('b.txt'));
});

test('FIFOs are archived without being opened; sockets are skipped with a notice', async () => {
  const src = path.join(root, 'special');
  fs.mkdirSync(src);
  execFileSync('mkfifo', [path.join(src, 'pipe')]);
  // A listening Unix socket file.
  const net = await import('node:net');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path.join(src, 'sock'), r));
  try {
    // If the packer opened the FIFO for reading it would block forever; the test timeout catches it.
    const { tar, warnings } = await pack(src);
    assert.ok(warnings.some((w) => w.path.endsWith('sock') && /socket/.test(w.message)));
    const out = gnuExtract(tar);
    assert.ok(fs.lstatSync(path.join(out, src.slice(1), 'pipe')).isFIFO());
    assert.equal(fs.existsSync(path.join(out, src.slice(1), 'sock')), false);
  } finally {
    server.close();
  }
});

test('a hard link whose first name was skipped is stored as a regular file, not a dangling link', async () => {
  const src = path.join(root, 'hard');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'a.txt'), 'content');
  fs.linkSync(path.join(src, 'a.txt'), path.join(src, 'b.txt'));
  const warnings: ScanWarning[] = [];
  const blocks: Buffer[] = [];
  const packer = new TarPacker(BS, { take: () => Buffer.alloc(BS) }, { push: (b) => void blocks.push(Buffer.from(b)) }, (w) => warnings.push(w));
  for (const e of scanSources([src], { exclude: [], onWarning: (w) => warnings.push(w) })) {
    if (e.name.toString().endsWith('a.txt')) {
      // Simulate the first name being unreadable at open time.
      fs.chmodSync(e.access, 0o000);
      const ent = { ...e, access: Buffer.concat([e.access, Buffer.from('-missing')]) };
      await packer.add(ent);
      fs.chmodSync(e.access, 0o644);
      continue;
    }
    await packer.add(e);
  }
  await packer.finish();
  const tar = path.join(root, 'hard.tar');
  fs.writeFileSync(tar, Buffer.concat(blocks));
  const out = gnuExtract(tar);
  assert.equal(fs.readFileSync(path.join(out, src.slice(1), 'b.txt'), 'utf8'), 'content');
});

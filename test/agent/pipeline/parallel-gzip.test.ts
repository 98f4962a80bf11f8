import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { test } from 'node:test';
import { gzipCodecByName, nativeGzipProblem, NATIVE_ADDON_PATH } from '../../../src/agent/pipeline/gzip-codec.js';
import { ParallelGzip } from '../../../src/agent/pipeline/parallel-gzip.js';

function blocks(n: number, size: number): Buffer[] {
  // Mixed compressible and random blocks, so compression times differ and results come back out of order.
  return Array.from({ length: n }, (_, i) => (i % 3 === 0 ? crypto.randomBytes(size) : Buffer.alloc(size, `block ${i} `)));
}

test('the libdeflate addon is built and loads (set NBACKUP_ALLOW_ZLIB=1 where no C compiler exists)', (t) => {
  const codec = gzipCodecByName('libdeflate');
  if (!codec && process.env.NBACKUP_ALLOW_ZLIB === '1') {
    t.diagnostic(`libdeflate missing, allowed by NBACKUP_ALLOW_ZLIB: ${nativeGzipProblem()}`);
    return;
  }
  assert.ok(codec, `${NATIVE_ADDON_PATH}: ${nativeGzipProblem()}`);
  assert.ok(codec.bound(1 << 20) > 1 << 20);
});

for (const name of ['libdeflate', 'zlib'] as const) {
  test(`${name}: output is the input, in order, as a gzip stream that gzip -t and gzip -d accept`, async (t) => {
    const codec = gzipCodecByName(name);
    if (!codec) {
      assert.equal(process.env.NBACKUP_ALLOW_ZLIB, '1', nativeGzipProblem());
      return t.diagnostic('libdeflate not built');
    }
    // A short last block, as the packer sends at the end of the archive.
    const input = [...blocks(24, 256 * 1024), Buffer.from('tail of the archive')];
    const out: Buffer[] = [];
    const gz = new ParallelGzip({
      level: 1,
      codec,
      maxInFlight: 4,
      blockSize: 256 * 1024,
      // Delivered buffers are reused once the promise settles: keep copies.
      deliver: async (b) => {
        out.push(Buffer.from(b));
        await new Promise((r) => setImmediate(r));
      },
    });
    assert.equal(gz.codec.name, name);
    for (const b of input) await gz.push(b);
    await gz.end();
    const all = Buffer.concat(out);
    assert.equal(out.length, input.length, 'one gzip member per block');
    assert.equal(gz.bytesOut, all.length);
    assert.ok(all.length < Buffer.concat(input).length * 0.8, `compressed ${all.length}`);
    assert.ok(zlib.gunzipSync(all).equals(Buffer.concat(input)));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-gz-'));
    try {
      const f = path.join(dir, 'x.gz');
      fs.writeFileSync(f, all);
      execFileSync('gzip', ['-t', f]);
      const viaGzip = execFileSync('gzip', ['-dc', f], { maxBuffer: 64 * 1024 * 1024 });
      assert.ok(viaGzip.equals(Buffer.concat(input)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('libdeflate and zlib agree on every level 1..9 (both decode to the input)', async (t) => {
  const native = gzipCodecByName('libdeflate');
  if (!native) return t.diagnostic('libdeflate not built');
  const zl = gzipCodecByName('zlib')!;
  const input = Buffer.concat(blocks(4, 64 * 1024));
  for (let level = 1; level <= 9; level++) {
    for (const codec of [native, zl]) {
      const out = await codec.compress(input, Buffer.allocUnsafe(codec.bound(input.length)), level);
      assert.ok(zlib.gunzipSync(out).equals(input), `${codec.name} level ${level}`);
    }
  }
});

test('a block larger than the block size is refused', async () => {
  const gz = new ParallelGzip({ level: 1, maxInFlight: 2, blockSize: 1024, deliver: () => undefined });
  await assert.rejects(gz.push(Buffer.alloc(1025)), /exceeds the block size/);
});

test('a slow consumer holds the producer back: never more than maxInFlight blocks outstanding', async () => {
  let outstanding = 0;
  let peak = 0;
  const gz = new ParallelGzip({
    level: 1,
    maxInFlight: 3,
    blockSize: 64 * 1024,
    deliver: async () => {
      // The scenario: a consumer slower than the compressor (not a synchronisation wait).
      await new Promise((r) => setTimeout(r, 5));
      outstanding--;
    },
  });
  for (const b of blocks(20, 64 * 1024)) {
    await gz.push(b);
    outstanding++;
    peak = Math.max(peak, outstanding);
  }
  await gz.end();
  assert.ok(peak <= 3, `peak outstanding ${peak}`);
  assert.equal(outstanding, 0);
});

test('a failing consumer fails the next push', async () => {
  const gz = new ParallelGzip({
    level: 1,
    maxInFlight: 2,
    blockSize: 1024,
    deliver: () => Promise.reject(new Error('socket gone')),
  });
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 50; i++) await gz.push(Buffer.alloc(1024, i));
      await gz.end();
    })(),
    /socket gone/,
  );
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { test } from 'node:test';
import { ParallelGzip } from '../../src/agent/parallel-gzip.js';

function blocks(n: number, size: number): Buffer[] {
  // Mixed compressible and random blocks, so compression times differ and results come back out of order.
  return Array.from({ length: n }, (_, i) => (i % 3 === 0 ? crypto.randomBytes(size) : Buffer.alloc(size, `block ${i} `)));
}

test('output is the input, in order, as a gzip stream that gzip -t and gunzip accept', async () => {
  const input = blocks(24, 256 * 1024);
  const out: Buffer[] = [];
  const gz = new ParallelGzip({ level: 1, maxInFlight: 4, blockSize: 256 * 1024, deliver: (b) => void out.push(b) });
  for (const b of input) await gz.push(b);
  await gz.end();
  const all = Buffer.concat(out);
  assert.equal(gz.bytesOut, all.length);
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

test('a slow consumer holds the producer back: never more than maxInFlight blocks outstanding', async () => {
  let outstanding = 0;
  let peak = 0;
  const gz = new ParallelGzip({
    level: 1,
    maxInFlight: 3,
    blockSize: 64 * 1024,
    deliver: async () => {
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

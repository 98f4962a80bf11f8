import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { encodeTrailer } from '../../protocol/frames.js';
import { BodyReceiver } from '../../src/server/body-receiver.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-recv-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function body(data: Buffer, trailer = encodeTrailer({ sha256: crypto.createHash('sha256').update(data).digest(), size: data.length })): Buffer {
  return Buffer.concat([data, trailer]);
}

/** Feeds `stream` in pieces whose sizes come from a seeded generator; returns the receiver and file. */
async function receive(stream: Buffer, seed: number): Promise<{ r: BodyReceiver; file: string }> {
  const file = path.join(dir, `f-${seed}-${Math.random()}`);
  const fd = fs.openSync(file, 'w');
  const r = new BodyReceiver(fd);
  let x = seed;
  for (let off = 0; off < stream.length; ) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const n = Math.min(stream.length - off, 1 + (x % 100 < 30 ? x % 50 : x % 70000));
    r.push(stream.subarray(off, off + n));
    off += n;
    if (r.congested) await r.drained();
  }
  await r.flushed();
  fs.closeSync(fd);
  return { r, file };
}

test('data split at every kind of boundary verifies, and the file holds exactly what arrived', async () => {
  const data = crypto.randomBytes(300_000);
  for (const seed of [1, 2, 3, 4, 5]) {
    const stream = body(data);
    const { r, file } = await receive(stream, seed);
    const v = r.verify();
    assert.equal(v.ok, true, JSON.stringify(v));
    if (v.ok) assert.equal(v.dataSize, data.length);
    assert.equal(r.written, stream.length);
    assert.ok(fs.readFileSync(file).equals(stream));
  }
});

test('tiny bodies: trailer only (empty data) verifies; fewer than 44 bytes does not', async () => {
  const empty = await receive(body(Buffer.alloc(0)), 7);
  assert.equal(empty.r.verify().ok, true);
  const short = await receive(Buffer.alloc(30, 1), 8);
  const v = short.r.verify();
  assert.equal(v.ok, false);
  if (!v.ok) assert.match(v.reason, /before a complete trailer/);
});

test('wrong hash, wrong size and a garbage trailer are each refused with a reason', async () => {
  const data = crypto.randomBytes(5000);
  const badHash = await receive(body(data, encodeTrailer({ sha256: Buffer.alloc(32, 9), size: data.length })), 11);
  const v1 = badHash.r.verify();
  assert.ok(!v1.ok && /SHA-256 mismatch/.test(v1.reason));
  const goodHash = crypto.createHash('sha256').update(data).digest();
  const badSize = await receive(body(data, encodeTrailer({ sha256: goodHash, size: data.length + 1 })), 12);
  const v2 = badSize.r.verify();
  assert.ok(!v2.ok && /announces/.test(v2.reason));
  const garbage = await receive(Buffer.concat([data, Buffer.alloc(44, 0x41)]), 13);
  const v3 = garbage.r.verify();
  assert.ok(!v3.ok && /malformed trailer/.test(v3.reason));
});

test('SACK-able offsets are reported only after the bytes are written', async () => {
  const file = path.join(dir, 'sack');
  const fd = fs.openSync(file, 'w');
  const seen: number[] = [];
  const early: string[] = [];
  // At each report the file must already hold that many bytes: a SACK promises they are on disk.
  const r = new BodyReceiver(fd, {
    onWritten: (w) => {
      seen.push(w);
      const size = fs.fstatSync(fd).size;
      if (size < w) early.push(`reported ${w} with ${size} bytes in the file`);
    },
  });
  for (let i = 0; i < 12; i++) {
    r.push(crypto.randomBytes(256 * 1024));
    if (r.congested) await r.drained();
  }
  await r.flushed();
  fs.closeSync(fd);
  assert.deepEqual(early, []);
  assert.ok(seen.length > 0);
  assert.equal(seen[seen.length - 1], 3 * 1024 * 1024);
  assert.equal(fs.statSync(file).size, 3 * 1024 * 1024);
});

test('write-behind: past 32 MiB the file is fdatasync\'ed in the background, and flushed() waits for it; a small body is not', async () => {
  const big = Buffer.alloc(80 * 1024 * 1024, 7);
  const file = path.join(dir, 'write-behind');
  const fd = fs.openSync(file, 'w');
  const r = new BodyReceiver(fd);
  for (let off = 0; off < big.length; off += 1024 * 1024) {
    r.push(big.subarray(off, off + 1024 * 1024));
    if (r.congested) await r.drained();
  }
  await r.flushed();
  fs.closeSync(fd);
  // The first fdatasync starts once 32 MiB are written; flushed() does not return while one is under way.
  assert.ok(r.durable >= 32 * 1024 * 1024 && r.durable <= r.written, `durable ${r.durable}, written ${r.written}`);
  assert.equal(fs.statSync(file).size, big.length);

  const small = await receive(body(crypto.randomBytes(100_000)), 9);
  assert.equal(small.r.durable, 0, 'nothing synced below the write-behind step');
});

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { ChunkAssembler } from '../../src/server/chunk-assembler.js';
import { prng, randomBytesSeeded } from '../helpers/tree.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function setup(memLimit: number): { a: ChunkAssembler; file: string; staging: string; fd: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-asm-'));
  dirs.push(dir);
  const file = path.join(dir, 'out.tmp');
  const staging = path.join(dir, 'out.staging');
  const fd = fs.openSync(file, 'w+');
  return { a: new ChunkAssembler(fd, staging, memLimit), file, staging, fd };
}

function chunks(n: number, size: number, seed: number): Buffer[] {
  // The last chunk is short, as at the end of a stream.
  return Array.from({ length: n }, (_, i) => randomBytesSeeded(i === n - 1 ? size - 123 : size, seed * 1000 + i));
}

test('chunks in any order are written in sequence order, hashed inline, duplicates ignored', async () => {
  const { a, file, fd } = setup(64 * 1024);
  const data = chunks(40, 16 * 1024, 7);
  const next = prng(11);
  const rnd = (): number => next() / 2 ** 32;
  const order = data.map((_, i) => i).sort(() => rnd() - 0.5);
  const stored: Promise<void>[] = [];
  for (const seq of order) {
    stored.push(a.add(seq, data[seq]));
    // Re-sent copies, as after a re-join: never written twice.
    if (rnd() < 0.3) stored.push(a.add(seq, Buffer.from(data[seq])));
    assert.ok(a.pendingBytes <= 64 * 1024, `pending ${a.pendingBytes}`);
  }
  await Promise.all(stored);
  await a.reach(data.reduce((n, b) => n + b.length, 0));
  const all = Buffer.concat(data);
  assert.equal(a.written, all.length);
  assert.equal(a.nextSeq, 40);
  assert.ok(a.stats.duplicates > 0);
  assert.ok(a.stats.spilled > 0, 'a 64 KiB limit must spill some of 40 × 16 KiB shuffled chunks');
  assert.ok(a.stats.peakPendingMem <= 64 * 1024);
  assert.deepEqual(a.digest(), crypto.createHash('sha256').update(all).digest());
  assert.ok(fs.readFileSync(file).equals(all));
  await a.dispose();
  fs.closeSync(fd);
});

test('the staging file is removed on dispose, and add after dispose rejects', async () => {
  const { a, staging, fd } = setup(0);
  const data = chunks(6, 4096, 3);
  const p = [5, 4, 3, 2, 1].map((s) => a.add(s, data[s]));
  await Promise.all(p); // all spilled: stored before chunk 0 ever arrives
  assert.equal(a.written, 0);
  assert.ok(fs.existsSync(staging));
  assert.equal(a.stats.spilled, 5);
  await a.add(0, data[0]);
  await a.reach(data.reduce((n, b) => n + b.length, 0));
  await a.dispose();
  assert.equal(fs.existsSync(staging), false);
  await assert.rejects(a.add(6, Buffer.alloc(1)), /closed/);
  fs.closeSync(fd);
});

test('a chunk waiting in memory is not stored until its turn comes', async () => {
  const { a, fd } = setup(1 << 20);
  let stored = false;
  const p = a.add(1, Buffer.alloc(100, 1)).then(() => (stored = true));
  // Every file operation queued so far has run (and a turn of the loop for their callbacks).
  await a.settled();
  await new Promise((r) => setImmediate(r));
  assert.equal(stored, false);
  await a.add(0, Buffer.alloc(100, 0));
  await p;
  assert.equal(a.written, 200);
  await a.dispose();
  fs.closeSync(fd);
});

test('taken up after a restart with the next chunk already staged: it is written without waiting for an arrival', async () => {
  const { a, file, staging, fd } = setup(1 << 20);
  const data = chunks(5, 4096, 9);
  // The stopped server had chunks 0-1 in the file and 2-3 staged (2 was next), 4 not yet received.
  fs.writeSync(fd, Buffer.concat([data[0], data[1]]), 0);
  fs.writeFileSync(staging, Buffer.concat([data[3], data[2]]));
  const hash = crypto.createHash('sha256').update(data[0]).update(data[1]);
  const origin = { stream: 0, streamStart: 0 };
  await a.restore({
    written: data[0].length + data[1].length,
    nextSeq: 2,
    hash,
    staged: [
      { seq: 3, length: data[3].length, at: 0, origin },
      { seq: 2, length: data[2].length, at: data[3].length, origin },
    ],
  });
  const upTo4 = data.slice(0, 4).reduce((n, b) => n + b.length, 0);
  // Before the fix the file stayed at chunk 2 until the session idled out: reach() never settled.
  await Promise.race([
    a.reach(upTo4),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`stuck at chunk ${a.nextSeq}: ${a.describe()}`)), 5000).unref()),
  ]);
  await a.add(4, data[4]);
  await a.reach(upTo4 + data[4].length);
  assert.deepEqual(a.digest(), crypto.createHash('sha256').update(Buffer.concat(data)).digest());
  await a.settled();
  assert.ok(fs.readFileSync(file).equals(Buffer.concat(data)));
  await a.dispose();
  fs.closeSync(fd);
});

test('seal: once the trailer size is in, nothing more is written or hashed; chunks waiting, queued or late are refused, re-sent ones are not', async () => {
  const { a, file, fd } = setup(64 * 1024);
  const data = chunks(3, 8192, 9);
  await Promise.all([a.add(0, data[0]), a.add(1, data[1])]);
  const size = data[0].length + data[1].length;
  await a.reach(size);
  // Chunk 2 is queued for the file (its turn has come) and chunk 3 waits in memory; then the
  // session is sealed at the trailer's size, before the queued write starts.
  const queued = a.add(2, data[2]);
  const waiting = a.add(3, randomBytesSeeded(4096, 99));
  a.seal();
  await assert.rejects(queued, /after the trailer/);
  await assert.rejects(waiting, /after the trailer/);
  // A chunk in turn arriving after the seal, and one far ahead: refused, nothing written.
  await assert.rejects(a.add(2, data[2]), /after the trailer/);
  await assert.rejects(a.add(7, data[2]), /after the trailer/);
  // A chunk already in the file, sent again after a re-join: still a harmless duplicate.
  await a.add(1, Buffer.from(data[1]));
  await a.settled();
  assert.equal(a.failed, null, 'a late chunk does not fail the session');
  assert.equal(a.written, size);
  assert.equal(a.nextSeq, 2);
  assert.deepEqual(a.digest(), crypto.createHash('sha256').update(Buffer.concat([data[0], data[1]])).digest());
  assert.equal(fs.statSync(file).size, size);
  await a.dispose();
  fs.closeSync(fd);
});

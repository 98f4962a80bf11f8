import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RingBuffer } from '../../../src/agent/pipeline/ring-buffer.js';

const bytes = (from: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

test('reads at arbitrary offsets return what was written there', async () => {
  const ring = new RingBuffer(100);
  await ring.write(bytes(0, 60));
  assert.deepEqual(ring.read(10, 5), bytes(10, 5));
  assert.deepEqual(ring.read(0, 1000), bytes(0, 60));
  assert.equal(ring.read(60, 10).length, 0);
});

test('wraps around: data spanning the end comes back in two contiguous views', async () => {
  const ring = new RingBuffer(100);
  await ring.write(bytes(0, 80));
  ring.release(70);
  await ring.write(bytes(80, 50)); // offsets 80..129 occupy ring slots 80..99 and 0..29
  assert.equal(ring.head, 130);
  const first = ring.read(75, 1000);
  assert.deepEqual(first, bytes(75, 25)); // up to the physical end
  const second = ring.read(100, 1000);
  assert.deepEqual(second, bytes(100, 30));
  assert.equal(ring.used, 60);
});

test('a full ring blocks the writer until a release frees space (backpressure)', async () => {
  const ring = new RingBuffer(64);
  await ring.write(bytes(0, 64));
  let done = false;
  const pending = ring.write(bytes(64, 16)).then(() => (done = true));
  // The ring is pure memory: one turn of the event loop runs everything a write could do.
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
  await turn();
  assert.equal(done, false, 'write must wait while the ring is full');
  assert.equal(ring.head, 64);
  ring.release(8); // frees 8: only part of the write fits
  await turn();
  assert.equal(done, false);
  assert.equal(ring.head, 72);
  ring.release(40);
  await pending;
  assert.equal(ring.head, 80);
  assert.deepEqual(ring.read(64, 16), bytes(64, 16));
});

test('reading an offset already released is a clear error; beyond the head too', async () => {
  const ring = new RingBuffer(32);
  await ring.write(bytes(0, 20));
  ring.release(10);
  assert.throws(() => ring.read(5, 4), /offset 5 was already released.*tail is 10/);
  assert.throws(() => ring.read(21, 4), /beyond the ring buffer head 20/);
  assert.equal(ring.holds(5), false);
  assert.equal(ring.holds(10), true);
  assert.throws(() => ring.release(21), /beyond what was sent/);
  ring.release(3); // behind the tail: ignored
  assert.equal(ring.tail, 10);
});

test('waitForData resolves on new data and on end; fail rejects waiting writers', async () => {
  const ring = new RingBuffer(16);
  const waiting = ring.waitForData(0);
  await ring.write(bytes(0, 4));
  await waiting;
  const waitEnd = ring.waitForData(4);
  ring.end();
  await waitEnd;
  await assert.rejects(ring.write(bytes(0, 1)), /after end/);

  const ring2 = new RingBuffer(4);
  await ring2.write(bytes(0, 4));
  const blocked = ring2.write(bytes(4, 4));
  ring2.fail(new Error('connection lost'));
  await assert.rejects(blocked, /connection lost/);
});

test('a long stream through a small ring stays byte-exact across many wraps', async () => {
  const ring = new RingBuffer(1000);
  const total = 50_000;
  const writer = (async () => {
    for (let off = 0; off < total; off += 333) await ring.write(bytes(off, Math.min(333, total - off)));
    ring.end();
  })();
  let off = 0;
  while (off < total) {
    await ring.waitForData(off);
    const view = ring.read(off, 97);
    assert.deepEqual(view, bytes(off, view.length));
    off += view.length;
    ring.release(off);
  }
  await writer;
  assert.equal(ring.head, total);
});

test('segment memory follows what is unacknowledged, not the capacity', async () => {
  const ring = new RingBuffer(1000, 100);
  const chunk = bytes(0, 50);
  let off = 0;
  for (let i = 0; i < 200; i++) {
    await ring.write(bytes(off, 50));
    off += 50;
    // Read back a held offset across segment and wrap boundaries, then acknowledge most of it.
    const back = Math.max(ring.tail, off - 120);
    assert.deepEqual(ring.read(back, 30), bytes(back, ring.read(back, 30).length));
    ring.release(off - 60);
    assert.ok(ring.allocated <= 300, `allocated ${ring.allocated} with ${ring.used} bytes held`);
  }
  void chunk;
  ring.release(off);
  assert.equal(ring.allocated, 0);
});

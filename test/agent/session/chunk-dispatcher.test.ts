import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RingBuffer } from '../../../src/agent/pipeline/ring-buffer.js';
import { ChunkDispatcher, type Chunk } from '../../../src/agent/session/chunk-dispatcher.js';

const never = new Promise<never>(() => undefined);
/** Lets every pending promise job run (a turn of the event loop, not a timed wait). */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A ring with `bytes` written (and ended when `end`), and a dispatcher cutting it in `chunk`-byte chunks. */
async function setup(bytes: number, chunk: number, end: boolean, capacity = 1 << 20): Promise<{ ring: RingBuffer; d: ChunkDispatcher }> {
  const ring = new RingBuffer(capacity, 4096);
  if (bytes > 0) await ring.write(Buffer.alloc(bytes, 7));
  if (end) ring.end();
  return { ring, d: new ChunkDispatcher(ring, chunk) };
}

test('cuts the ring into numbered chunks of chunk_size, the last one short, then null once all are acknowledged', async () => {
  const { d } = await setup(10_000, 4096, true);
  const chunks: Chunk[] = [];
  for (let i = 0; i < 3; i++) chunks.push((await d.take(never))!);
  assert.deepEqual(
    chunks.map((c) => [c.seq, c.start, c.length]),
    [
      [0, 0, 4096],
      [1, 4096, 4096],
      [2, 8192, 1808],
    ],
  );
  assert.equal(d.complete, false);
  for (const c of chunks) d.ack(c);
  assert.equal(d.complete, true);
  assert.equal(await d.take(never), null);
  assert.equal(d.ackedBytes, 10_000);
});

test('a partial chunk is not handed out until the ring has a whole chunk or has ended', async () => {
  const { ring, d } = await setup(1000, 4096, false);
  let got: Chunk | null | undefined;
  const pending = d.take(never).then((c) => (got = c));
  await ring.write(Buffer.alloc(1000));
  await settle();
  assert.equal(got, undefined, 'only 2000 of 4096 bytes: nothing to hand out yet');
  await ring.write(Buffer.alloc(3000));
  await pending;
  assert.deepEqual(got, { seq: 0, start: 0, length: 4096 });
  // The remaining 904 bytes go out as a short chunk once the ring ends.
  const tail = d.take(never);
  ring.end();
  assert.deepEqual(await tail, { seq: 1, start: 4096, length: 904 });
});

test('the ring is released only up to the lowest unacknowledged chunk, whatever order acks come in', async () => {
  const { ring, d } = await setup(4 * 4096, 4096, true);
  const c = [await d.take(never), await d.take(never), await d.take(never), await d.take(never)] as Chunk[];
  d.ack(c[2]);
  d.ack(c[1]);
  assert.equal(ring.tail, 0, 'chunk 0 is still unacknowledged');
  assert.equal(d.lowest, 0);
  d.ack(c[0]);
  assert.equal(ring.tail, 3 * 4096);
  assert.equal(d.lowest, 3);
  d.ack(c[1]); // a duplicate ack changes nothing
  assert.equal(d.ackedBytes, 3 * 4096);
  d.ack(c[3]);
  assert.equal(ring.tail, 4 * 4096);
  assert.equal(d.complete, true);
});

test("a dead stream's chunks are handed out again, lowest first, before new ones; acknowledged ones are dropped", async () => {
  const { d } = await setup(6 * 4096, 4096, true);
  const c = [] as Chunk[];
  for (let i = 0; i < 4; i++) c.push((await d.take(never))!);
  d.ack(c[1]);
  d.orphan([c[3], c[1], c[0]]);
  assert.deepEqual(d.takeOrphan(), c[0]);
  assert.deepEqual(await d.take(never), c[3], 'orphans before new chunks; the acknowledged chunk 1 is not handed out again');
  assert.equal((await d.take(never))!.seq, 4);
  assert.equal(d.takeOrphan(), undefined);
});

test('take returns undefined when cancelled, and rejects once the dispatcher failed', async () => {
  const { d } = await setup(100, 4096, false);
  let cancel!: () => void;
  const cancelled = new Promise<void>((r) => (cancel = r));
  const pending = d.take(cancelled);
  cancel();
  assert.equal(await pending, undefined);
  const waiting = d.take(never);
  d.fail(new Error('producer failed'));
  await assert.rejects(waiting, /producer failed/);
  await assert.rejects(d.allAcknowledged(), /producer failed/);
});

test('allAcknowledged resolves when the last chunk of an ended ring is acknowledged', async () => {
  const { ring, d } = await setup(5000, 4096, false);
  let done = false;
  const all = d.allAcknowledged().then(() => (done = true));
  const a = (await d.take(never))!;
  d.ack(a);
  ring.end();
  const b = (await d.take(never))!;
  await settle();
  assert.equal(done, false);
  d.ack(b);
  await all;
  assert.equal(done, true);
});

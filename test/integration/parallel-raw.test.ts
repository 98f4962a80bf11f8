/**
 * Parallel sessions (spec §3) driven directly with a raw mTLS client: PJIN answers and chunk
 * limits, a stream or a primary that half-closes, a session that expires with chunks waiting.
 * The tests through the real agent are in parallel.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AckStatus, CHUNK_HEADER_SIZE, FinalStatus, HealthStatus, ParallelStatus } from '../../protocol/constants.js';
import {
  decodeChunkSack,
  decodeFinalAck,
  decodeParallelAck,
  encodeChunkHeader,
  encodeParallelInit,
  encodeParallelJoin,
  type ParallelAck,
} from '../../protocol/frames.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { pollUntil } from '../helpers/wait.js';
import { assertNoInternalError, committedBackups, listFilesRecursive, serverTail, type Env } from './harness.js';
import { KiB, ParallelBench, TEST_TIMEOUT } from './parallel-bench.js';
import { rawAgent, rawHandshake, rawHealth, sha256, trailerFor, type RawClient } from './raw-client.js';

const bench = new ParallelBench();
const { setup } = bench;
before(() => bench.start({ source: false }));
after(() => bench.stop());

// ─── 6–9. raw mTLS client ─────────────────────────────────────────────────────────────────────

async function rawOpen(env: Env): Promise<RawClient> {
  const c = rawAgent(env.server.port, bench.pki);
  await c.connected();
  return c;
}

async function rawJoin(env: Env, sessionId: string, streamIndex: number, timeoutMs = 5000): Promise<{ c: RawClient; ack: ParallelAck }> {
  const c = await rawOpen(env);
  c.write(encodeParallelJoin({ sessionId, streamIndex }));
  try {
    return { c, ack: await c.read(decodeParallelAck, timeoutMs, `ParallelACK for stream ${streamIndex}`) };
  } catch (err) {
    c.destroy();
    throw err;
  }
}

/** NBKP → ACK GO → ParallelInit on a raw primary connection; resolves once the server took it. */
async function rawParallelSession(env: Env, backup: string, maxStreams: number, chunkSize: number): Promise<{ primary: RawClient; sessionId: string }> {
  const primary = await rawOpen(env);
  const ack = await rawHandshake(primary, { agent: 'agent-a', backup });
  assert.equal(ack.status, AckStatus.GO, ack.message);
  primary.write(encodeParallelInit({ maxStreams, chunkSize }));
  await env.server.waitForLog((l) => l.msg === 'parallel session' && l.session === ack.sessionId, 5000);
  return { primary, sessionId: ack.sessionId };
}

function chunkFrame(globalSeq: number, data: Buffer): Buffer {
  return Buffer.concat([encodeChunkHeader({ globalSeq, length: data.length }), data]);
}

test('raw PJIN: unknown session → NOT_FOUND, index ≥ maxStreams → FULL, bad chunk length closes only that stream', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('raw');
  const clients: RawClient[] = [];
  try {
    // A parallel session: 2 streams of 64 KiB chunks.
    const chunkSize = 64 * KiB;
    const { primary, sessionId } = await rawParallelSession(env, 'raw', 2, chunkSize);
    clients.push(primary);
    const join = (id: string, index: number) => rawJoin(env, id, index);

    // Unknown session.
    const unknown = await join(randomUUID(), 0);
    clients.push(unknown.c);
    assert.deepEqual(unknown.ack, { status: ParallelStatus.NOT_FOUND, lastOffset: 0 });
    await unknown.c.waitClosed(5000);

    // Beyond the announced maxStreams.
    for (const index of [2, 255]) {
      const full = await join(sessionId, index);
      clients.push(full.c);
      assert.deepEqual(full.ack, { status: ParallelStatus.FULL, lastOffset: 0 }, `stream index ${index}`);
      await full.c.waitClosed(5000);
    }

    // A zero-length chunk, then one longer than chunkSize: each closes that stream's connection.
    for (const length of [0, chunkSize + 1]) {
      const bad = await join(sessionId, 0);
      clients.push(bad.c);
      assert.deepEqual(bad.ack, { status: ParallelStatus.OK, lastOffset: 0 });
      bad.c.write(encodeChunkHeader({ globalSeq: 0, length }));
      if (length > 0) bad.c.write(Buffer.alloc(1024));
      await bad.c.waitClosed(5000);
      await env.server.waitForLog(
        (l) => l.msg === 'connection closed' && String(l.err).includes(`chunk length ${length} is outside 1..${chunkSize}`),
        5000,
      );
      assert.equal(primary.closed, false, 'the primary stays open');
    }
    assert.equal((await rawHealth(env.server.port, bench.pki)).status, HealthStatus.BUSY, 'the server still serves (a session is running)');

    // The session still works: the same index re-joins at offset 0 and both streams deliver.
    const data = [randomBytesSeeded(chunkSize, 61), randomBytesSeeded(1000, 62)];
    const s0 = await join(sessionId, 0);
    const s1 = await join(sessionId, 1);
    clients.push(s0.c, s1.c);
    assert.deepEqual(s0.ack, { status: ParallelStatus.OK, lastOffset: 0 });
    assert.deepEqual(s1.ack, { status: ParallelStatus.OK, lastOffset: 0 });
    // Out of order on purpose: chunk 1 first, on stream 1.
    s1.c.write(chunkFrame(1, data[1]));
    s0.c.write(chunkFrame(0, data[0]));
    assert.deepEqual(await s0.c.read(decodeChunkSack, 5000, 'CSAK 0'), { streamIndex: 0, chunkSeq: 0, offset: CHUNK_HEADER_SIZE + chunkSize });
    assert.deepEqual(await s1.c.read(decodeChunkSack, 5000, 'CSAK 1'), { streamIndex: 1, chunkSeq: 1, offset: CHUNK_HEADER_SIZE + 1000 });
    s0.c.socket.end();
    s1.c.socket.end();
    const whole = Buffer.concat(data);
    primary.write(trailerFor(whole));
    primary.socket.end();
    assert.deepEqual(await primary.read(decodeFinalAck, 5000, 'Final ACK'), { status: FinalStatus.OK });
    const dir = path.join(env.store, 'agent-a', 'raw');
    const committed = await committedBackups(dir);
    assert.equal(committed.length, 1);
    assert.ok(fs.readFileSync(path.join(dir, committed[0])).equals(whole), 'the chunks, in globalSeq order');
    assert.equal((await rawHealth(env.server.port, bench.pki)).status, HealthStatus.READY);
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

// ─── 7. a half-closed stream with chunks still waiting ────────────────────────────────────────

test('raw: a stream that half-closes while its chunks wait for an earlier one is released: its re-join is answered, acknowledged later', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('halfclose');
  const clients: RawClient[] = [];
  try {
    const chunkSize = 64 * KiB;
    const { primary, sessionId } = await rawParallelSession(env, 'raw', 2, chunkSize);
    clients.push(primary);
    const data = [randomBytesSeeded(chunkSize, 71), randomBytesSeeded(chunkSize, 72), randomBytesSeeded(1000, 73)];
    // Stream 1 carries chunks 1 and 2, then half-closes (what the agent's socket.destroy() looks
    // like on the wire). Chunk 0 has not come, so neither can be stored (nor acknowledged) yet.
    const first = await rawJoin(env, sessionId, 1);
    clients.push(first.c);
    assert.deepEqual(first.ack, { status: ParallelStatus.OK, lastOffset: 0 });
    first.c.write(Buffer.concat([chunkFrame(1, data[1]), chunkFrame(2, data[2])]));
    first.c.socket.end();

    // The agent re-joins stream 1: the server must answer, with both chunks counted.
    const expectedOffset = 2 * CHUNK_HEADER_SIZE + data[1].length + data[2].length;
    const again = await rawJoin(env, sessionId, 1, 5000);
    clients.push(again.c);
    assert.deepEqual(again.ack, { status: ParallelStatus.OK, lastOffset: expectedOffset });

    // Chunk 0 arrives on stream 0: everything is stored, and stream 1's chunks are acknowledged on
    // the connection that feeds it now.
    const s0 = await rawJoin(env, sessionId, 0);
    clients.push(s0.c);
    s0.c.write(chunkFrame(0, data[0]));
    assert.deepEqual(await s0.c.read(decodeChunkSack, 5000, 'CSAK 0'), { streamIndex: 0, chunkSeq: 0, offset: CHUNK_HEADER_SIZE + chunkSize });
    let last = await again.c.read(decodeChunkSack, 5000, 'CSAK on the re-joined stream 1');
    if (last.chunkSeq === 1) last = await again.c.read(decodeChunkSack, 5000, 'second CSAK on stream 1');
    assert.deepEqual(last, { streamIndex: 1, chunkSeq: 2, offset: expectedOffset });
    s0.c.socket.end();
    again.c.socket.end();
    const whole = Buffer.concat(data);
    primary.write(trailerFor(whole));
    primary.socket.end();
    assert.deepEqual(await primary.read(decodeFinalAck, 5000, 'Final ACK'), { status: FinalStatus.OK });
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

// ─── 8. session_ttl expiry with chunks waiting ────────────────────────────────────────────────

test('raw: a parallel session that expires with chunks waiting in memory and staged is discarded cleanly, the server keeps running', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('expire', { server: { session_ttl: '1s' }, storage: { assembler_pending_mem_limit: '64kb' } });
  const clients: RawClient[] = [];
  try {
    const chunkSize = 64 * KiB;
    const { primary, sessionId } = await rawParallelSession(env, 'raw', 2, chunkSize);
    clients.push(primary);
    // Chunks 1 and 2 (1000 bytes each) wait in memory, chunk 3 (64 KiB) goes beyond the 64 KiB
    // limit and is staged; chunk 0 never comes.
    const s1 = await rawJoin(env, sessionId, 1);
    clients.push(s1.c);
    s1.c.write(Buffer.concat([chunkFrame(1, randomBytesSeeded(1000, 81)), chunkFrame(2, randomBytesSeeded(1000, 82)), chunkFrame(3, randomBytesSeeded(chunkSize, 83))]));
    const backupDir = path.join(env.store, 'agent-a', 'raw');
    const staged = await pollUntil(async () => (await listFilesRecursive(backupDir)).some((f) => f.includes('staging')), 5000);
    assert.ok(staged, `chunk 3 was staged: ${(await listFilesRecursive(env.store)).join(', ')}`);
    // The agent vanishes (RST on every connection): the session waits session_ttl, then goes.
    s1.c.reset();
    primary.reset();
    await env.server.waitForLog((l) => l.msg === 'connection lost; session kept for resume' && l.session === sessionId, 5000);
    const discarded = await env.server
      .waitForLog((l) => l.msg === 'session discarded' && l.session === sessionId, 4000)
      .catch((err: unknown) => assert.fail(`no "session discarded" within 4 s: ${String(err)}`));
    assert.match(String(discarded.reason), /not resumed within 1s/);
    const clean = await pollUntil(async () => (await listFilesRecursive(env.store)).length === 0, 2000);
    assert.equal(env.server.proc.exitCode, null, `the server survived discarding the session\n${serverTail(env.server, 30)}`);
    assert.ok(clean, `temporary and staging files removed: ${(await listFilesRecursive(env.store)).join(', ')}`);
    assert.equal((await rawHealth(env.server.port, bench.pki)).status, HealthStatus.READY, 'the server still serves');
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

// ─── 9. a primary that goes away before its trailer ───────────────────────────────────────────

test('raw: a primary that half-closes before its trailer is closed by the server too, the session kept for resume', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('primaryeof');
  const clients: RawClient[] = [];
  try {
    const { primary, sessionId } = await rawParallelSession(env, 'raw', 2, 64 * KiB);
    clients.push(primary);
    primary.socket.end();
    await env.server.waitForLog((l) => l.msg === 'connection lost; session kept for resume' && l.session === sessionId, 5000);
    // The server has nothing more to say on this connection: it must not keep it half-open.
    await primary.waitUntil(() => primary.ended || primary.closed, 3000, 'the server to close its side of the primary');
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

test('raw: a stream that joins between GO and the ParallelInit waits for its session instead of hearing NOT_FOUND', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('raw-early-join');
  const clients: RawClient[] = [];
  try {
    const primary = await rawOpen(env);
    clients.push(primary);
    const ack = await rawHandshake(primary, { agent: 'agent-a', backup: 'early' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    // The join goes first and is read by the server before the session exists.
    const stream = await rawOpen(env);
    clients.push(stream);
    stream.write(encodeParallelJoin({ sessionId: ack.sessionId, streamIndex: 0 }));
    const early = stream.read(decodeParallelAck, 5000, 'ParallelACK of the early join');
    await env.server.waitForLog((l) => l.msg === 'session started' && l.session === ack.sessionId, 5000);
    primary.write(encodeParallelInit({ maxStreams: 1, chunkSize: 64 * KiB }));
    assert.deepEqual(await early, { status: ParallelStatus.OK, lastOffset: 0 });
    // A session that never gets its mode frame does not hold an early join forever.
    const other = await rawOpen(env);
    clients.push(other);
    const ack2 = await rawHandshake(other, { agent: 'agent-a', backup: 'never-init' });
    assert.equal(ack2.status, AckStatus.GO);
    const waiting = await rawJoin(env, ack2.sessionId, 0, 10_000);
    clients.push(waiting.c);
    assert.deepEqual(waiting.ack, { status: ParallelStatus.NOT_FOUND, lastOffset: 0 });
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

// ─── 10. a chunk that comes after the trailer ─────────────────────────────────────────────────

test('raw: a chunk completed after the trailer is refused; the committed archive is exactly what the trailer describes', { timeout: TEST_TIMEOUT }, async () => {
  const env = await setup('late-chunk');
  const clients: RawClient[] = [];
  try {
    const chunkSize = 64 * KiB;
    const { primary, sessionId } = await rawParallelSession(env, 'raw', 1, chunkSize);
    clients.push(primary);
    const s0 = await rawJoin(env, sessionId, 0);
    clients.push(s0.c);
    const data = randomBytesSeeded(chunkSize, 91);
    s0.c.write(chunkFrame(0, data));
    assert.deepEqual(await s0.c.read(decodeChunkSack, 5000, 'CSAK 0'), { streamIndex: 0, chunkSeq: 0, offset: CHUNK_HEADER_SIZE + chunkSize });
    // Chunk 1 all but its last byte, then the trailer for chunk 0 alone; the last byte comes once
    // the server has the file complete and is about to judge and commit it.
    const late = chunkFrame(1, Buffer.alloc(chunkSize, 0x41));
    s0.c.write(late.subarray(0, late.length - 1));
    primary.write(trailerFor(data));
    await env.server.waitForLog((l) => l.msg === 'parallel session assembled' && l.session === sessionId, 5000);
    s0.c.write(late.subarray(late.length - 1));
    assert.deepEqual(await primary.read(decodeFinalAck, 5000, 'Final ACK'), { status: FinalStatus.OK });
    const refused = await env.server.waitForLog((l) => /chunk 1 could not be stored: .*after the trailer/.test(String(l.err ?? l.reason)), 5000);
    assert.equal(refused.level, 40, `a warning: ${JSON.stringify(refused)}`);
    await s0.c.waitClosed(5000);
    // Nothing of chunk 1 reached the archive or its sidecar, now or later.
    const dir = path.join(env.store, 'agent-a', 'raw');
    const [archive] = await committedBackups(dir);
    assert.ok(archive, 'one archive committed');
    const sidecar = fs.readFileSync(path.join(dir, `${archive}.sha256`), 'utf8');
    assert.equal(sidecar, `${sha256(data).toString('hex')}  ${archive}\n`);
    assert.ok(fs.readFileSync(path.join(dir, archive)).equals(data), 'the archive is chunk 0 alone');
    assert.deepEqual((await listFilesRecursive(dir)).map((f) => path.basename(f)).sort(), [archive, `${archive}.sha256`].sort());
    assertNoInternalError(env.server);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

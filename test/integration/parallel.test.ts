/**
 * Parallel sessions (spec §3): the real agent and server, four data streams through the TCP fault
 * proxy on 127.0.0.1. The proxy sees the connections in order: #0 is the primary, #1..#4 are the
 * data streams (in join order), anything later is a re-join.
 *
 * The source is the shared test tree plus 24 MiB of incompressible bulk, cut into 256 KiB chunks
 * (≈ 115 chunks), so every stream carries many chunks and a cut always lands mid-transfer.
 * Tests 6–9, which drive the server directly with a raw mTLS client, are in parallel-raw.test.ts.
 *
 * Each test prints its figures (bytes on the wire, peakPendingMem, spilled, RSS …) as a diagnostic.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { REJOIN_ATTEMPTS } from '../../src/agent/session/data-stream.js';
import { runAgent } from '../helpers/proc.js';
import type { ConnPlan } from '../helpers/proxy.js';
import { pollUntil } from '../helpers/wait.js';
import { assertNoInternalError, committedBackups, listFilesRecursive, logsWith, oneLog, serverTail, showRun } from './harness.js';
import {
  assertJoins,
  CHUNK,
  KiB,
  MiB,
  mib,
  ParallelBench,
  peakRss,
  report,
  settled,
  STREAMS,
  TEST_TIMEOUT,
  WINDOW,
  withProxy,
} from './parallel-bench.js';

/** After a commit the agent sends the archive's index on one more connection. */
const INDEX = 1;
const bench = new ParallelBench();
const { setup, agentYaml, restoreAndCompare } = bench;
before(() => bench.start({ source: true }));
after(() => bench.stop());

// ─── 1. baseline ──────────────────────────────────────────────────────────────────────────────

test('parallels: 4 without faults: four streams, exact restore, one committed file', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('base');
  const rssAtStart = peakRss(env.server.proc.pid);
  await withProxy(env, [], async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    const rssPeak = peakRss(env.server.proc.pid);
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env.server);

    assert.equal(proxy.connections, 1 + STREAMS + INDEX, 'the primary, four data streams and the index, nothing else');
    assertJoins(env.server, 0);
    const started = oneLog(run.logs, 'parallel session started', 'agent');
    assert.equal(started.maxStreams, STREAMS);
    assert.equal(started.streams, STREAMS, 'auto_scaler disabled: every stream from the start');
    const finished = oneLog(run.logs, 'parallel streams finished', 'agent');
    assert.deepEqual(finished.streams, [0, 1, 2, 3].map((stream) => ({ stream, joins: 1, rotations: 0, state: 'done' })));

    const assembled = oneLog(env.server.logs(), 'parallel session assembled', 'server');
    const chunks = Math.ceil(size / CHUNK);
    assert.equal(assembled.chunks, chunks, 'every chunk once');
    assert.equal(assembled.duplicates, 0);
    assert.equal(assembled.streams, STREAMS);
    // Every data stream carried a share of the chunks.
    const perConn = proxy.conns.slice(1, 1 + STREAMS).map((c) => c.bytesClientToServer);
    assert.ok(perConn.every((b) => b >= 2 * CHUNK), `bytes per data stream: ${perConn.join(', ')}`);

    const committed = oneLog(run.logs, 'backup committed', 'agent');
    assert.equal(committed.bytes, size);
    assert.equal(committed.bytesSent, size, 'every chunk sent once');
    assert.equal(committed.bytesResent, 0);
    report(t, {
      archive: size,
      chunks,
      proxyC2S: proxy.bytesClientToServer,
      overhead: proxy.bytesClientToServer - size,
      perStream: perConn,
      peakPendingMem: assembled.peakPendingMem,
      spilled: assembled.spilled,
      rssAtStart,
      rssPeak,
      rssGrowth: rssPeak - rssAtStart,
      agentMs: run.durationMs,
    });
  });
});

// ─── 2. streams reset mid-transfer ────────────────────────────────────────────────────────────

test('three data streams reset mid-transfer: each re-joins at its offset, bytes on the wire stay bounded', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('cuts');
  // Data streams #1, #2 and #4 are cut at different stream offsets (≈ 7 MB per stream in all).
  const plan: ConnPlan[] = [{ forward: true }, { resetAfterBytes: 1_000_000 }, { resetAfterBytes: 2_500_000 }, { forward: true }, { resetAfterBytes: 4_000_000 }];
  const cuts = 3;
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env.server);

    assert.deepEqual(
      proxy.conns.slice(0, 5).map((c) => c.state),
      ['closed', 'reset', 'reset', 'closed', 'reset'],
      'every planned cut happened',
    );
    assert.equal(proxy.connections, 1 + STREAMS + cuts + INDEX, 'one re-join per cut, nothing else');
    const agentRejoins = logsWith(run.logs, 'stream re-joined');
    assert.equal(agentRejoins.length, cuts, 'the agent logged "stream re-joined" once per cut');
    assert.equal(new Set(agentRejoins.map((l) => l.stream)).size, cuts, 'three different streams re-joined');
    assert.equal(logsWith(run.logs, 'stream connection lost; re-joining').length, cuts);
    assert.equal(logsWith(run.logs, 'stream is dead; its unacknowledged chunks go to the live streams').length, 0);
    assertJoins(env.server, cuts);
    // lastOffset counts the complete chunks the server had read before the cut (data still in its
    // receive queue dies with the RST, so it may be 0); the agent continues from exactly there.
    const serverRejoins = logsWith(env.server.logs(), 'stream re-joined');
    for (const l of agentRejoins) {
      const s = serverRejoins.find((r) => r.stream === l.stream);
      assert.ok(s, `server saw stream ${String(l.stream)} re-join`);
      assert.equal(l.lastOffset, s.lastOffset, 'the agent continues from exactly the server offset');
    }

    const committed = oneLog(run.logs, 'backup committed', 'agent');
    const resent = Number(committed.bytesResent);
    assert.ok(resent <= cuts * WINDOW, `resent ${resent} bytes > ${cuts} × window ${WINDOW}`);
    assert.equal(committed.bytesSent, size + resent, 'every chunk sent once, plus the resends');
    // On the wire: the archive, at most one unacknowledged window per cut, and TLS / header
    // overhead (≈ 29 B per 16 KiB record, 8 B per chunk header, < 8 KiB per connection handshake).
    const overhead = Math.ceil(size * 0.005) + proxy.connections * 8 * KiB;
    const bound = size + cuts * WINDOW + overhead;
    assert.ok(
      proxy.bytesClientToServer <= bound,
      `proxy forwarded ${proxy.bytesClientToServer} client→server bytes, bound ${bound} (archive ${size})`,
    );
    const assembled = oneLog(env.server.logs(), 'parallel session assembled', 'server');
    assert.equal(assembled.chunks, Math.ceil(size / CHUNK));
    report(t, {
      archive: size,
      window: WINDOW,
      proxyC2S: proxy.bytesClientToServer,
      excess: proxy.bytesClientToServer - size,
      bound,
      bytesResent: resent,
      rejoinOffsets: serverRejoins.map((l) => l.lastOffset),
      duplicates: assembled.duplicates,
      agentMs: run.durationMs,
    });
  });
});

// ─── 3. one stream dead for good ──────────────────────────────────────────────────────────────

test('a data stream that stalls (half-open, nothing forwarded, nothing closed) is detected and re-joined', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('stall');
  // Stream #2 stops forwarding after 1.5 MB and never closes: only the agent's watchdog can notice.
  const plan: ConnPlan[] = [{ forward: true }, { forward: true }, { stallAfterBytes: 1_500_000 }, { forward: true }, { forward: true }];
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    await restoreAndCompare(env);
    assertNoInternalError(env.server);
    assert.equal(proxy.conns[2].state, 'stalled');
    const lost = logsWith(run.logs, 'stream connection lost; re-joining');
    assert.equal(lost.length, 1, 'only the stalled stream is declared dead, not the healthy ones waiting for it');
    assert.match(String(lost[0].err), /no acknowledgement and no progress/);
    assert.equal(logsWith(run.logs, 'stream re-joined').length, 1);
    report(t, { agentMs: run.durationMs, stalledStream: lost[0].stream });
  });
});

test('autoscaler: on a link where each flow is capped, it adds streams while throughput grows, logging the figures', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('scale');
  // Every data connection is capped at 1.5 MiB/s, as flows on a long fat pipe: more streams, more
  // throughput. The primary carries only the trailer.
  const cap = 1.5 * MiB;
  const plan: ConnPlan[] = [{ forward: true }, ...Array.from({ length: STREAMS }, () => ({ throttleBytesPerSec: cap }))];
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port, { autoscaler: true });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    await restoreAndCompare(env);
    assertNoInternalError(env.server);
    const started = oneLog(run.logs, 'parallel session started', 'agent');
    assert.equal(started.streams, 1, 'starts with one stream');
    const adds = logsWith(run.logs, 'autoscaler: adding a stream');
    assert.ok(adds.length >= 2, `expected at least two additions, got ${adds.length}:\n${showRun(run)}`);
    assert.deepEqual(
      adds.map((a) => a.streams),
      adds.map((_, i) => i + 2),
      'one stream at a time',
    );
    // The second addition was earned: one more stream brought ≥ 10 % more throughput.
    assert.ok(Number(adds[1].gainPct) >= 10, `gain ${String(adds[1].gainPct)} %`);
    assert.ok(Number(adds[1].afterMBps) > Number(adds[1].beforeMBps));
    for (const a of adds) assert.equal(typeof a.reason, 'string');
    const joined = logsWith(env.server.logs(), 'stream joined').length;
    assert.equal(joined, adds.length + 1, 'the server saw exactly the streams the scaler asked for');
    report(t, { agentMs: run.durationMs, decisions: adds.map((a) => [a.streams, a.beforeMBps, a.afterMBps, a.gainPct]) });
  });
});

test('one stream cut and every re-join refused: it dies, its chunks go to the other three, exact restore', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('dead1');
  const refusals: ConnPlan[] = Array.from({ length: REJOIN_ATTEMPTS }, () => ({ refuse: true }) as const);
  const plan: ConnPlan[] = [{ forward: true }, { resetAfterBytes: 2_000_000 }, { forward: true }, { forward: true }, { forward: true }, ...refusals];
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env.server);

    assert.equal(proxy.connections, 1 + STREAMS + REJOIN_ATTEMPTS + INDEX, 'no other stream reconnected');
    assert.deepEqual(
      proxy.conns.map((c) => c.state),
      ['closed', 'reset', 'closed', 'closed', 'closed', ...refusals.map(() => 'refused'), 'closed'],
    );
    const dead = oneLog(run.logs, 'stream is dead; its unacknowledged chunks go to the live streams', 'agent');
    assert.equal(dead.attempts, REJOIN_ATTEMPTS);
    assert.ok(Number(dead.handedOver) >= 1, `handed over ${String(dead.handedOver)} chunks`);
    const failedJoins = logsWith(run.logs, 'stream re-join failed');
    assert.equal(failedJoins.length, REJOIN_ATTEMPTS);
    assert.ok(failedJoins.every((l) => l.stream === dead.stream), 'only the dead stream tried to re-join');
    const finished = oneLog(run.logs, 'parallel streams finished', 'agent');
    const states = (finished.streams as { stream: number; state: string }[]).map((s) => [s.stream, s.state]);
    assert.deepEqual(
      states,
      [0, 1, 2, 3].map((i) => [i, i === dead.stream ? 'dead' : 'done']),
      'three streams finished the backup',
    );
    assertJoins(env.server, 0);

    const committed = oneLog(run.logs, 'backup committed', 'agent');
    // What the dead stream held unacknowledged was sent again by the others: at most its window.
    assert.ok(Number(committed.bytesResent) > 0 && Number(committed.bytesResent) <= WINDOW, `resent ${String(committed.bytesResent)}`);
    const assembled = oneLog(env.server.logs(), 'parallel session assembled', 'server');
    assert.equal(assembled.chunks, Math.ceil(size / CHUNK));
    report(t, {
      archive: size,
      deadStream: dead.stream,
      handedOver: dead.handedOver,
      bytesResent: committed.bytesResent,
      duplicates: assembled.duplicates,
      proxyC2S: proxy.bytesClientToServer,
      agentMs: run.durationMs,
    });
  });
});

// ─── 4. every stream dead ─────────────────────────────────────────────────────────────────────

test('every stream cut and every re-join refused: the agent fails clearly, the server commits nothing and drops its temp file within session_ttl', { timeout: TEST_TIMEOUT }, async (t) => {
  const ttlMs = 2000;
  const env = await setup('alldead', { server: { session_ttl: '2s' } });
  // Every cut lies within the first window (4 chunks ≈ 1 MiB) of its stream, so each stream
  // reaches its cut whatever the others do.
  const cutsAt = [400_000, 600_000, 800_000, 1_000_000];
  const refusals: ConnPlan[] = Array.from({ length: STREAMS * REJOIN_ATTEMPTS + 4 }, () => ({ refuse: true }) as const);
  const plan: ConnPlan[] = [{ forward: true }, ...cutsAt.map((n) => ({ resetAfterBytes: n })), ...refusals];
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    const exitedAt = Date.now();
    assert.notEqual(run.code, 0, showRun(run));
    assert.equal(run.code, 1, showRun(run));
    // The data streams (the primary's server side is test 9's business).
    await settled(proxy, 1);
    assert.match(
      run.stderr,
      new RegExp(`^nbackup-agent: backup "app" failed: all ${STREAMS} parallel streams are dead`, 'm'),
      'one clear stderr line',
    );
    assert.equal(logsWith(run.logs, 'stream is dead; its unacknowledged chunks go to the live streams').length, STREAMS);
    assert.equal(proxy.connections, 1 + STREAMS + STREAMS * REJOIN_ATTEMPTS, 'three re-joins per stream, then nothing (a failed backup sends no index)');
    assert.deepEqual(
      proxy.conns.slice(1, 1 + STREAMS).map((c) => c.state),
      cutsAt.map(() => 'reset'),
      showRun(run),
    );

    const backupDir = path.join(env.store, 'agent-a', 'app');
    assert.deepEqual(await committedBackups(backupDir), [], 'nothing committed');
    // The session waits (detached) for session_ttl, then the server deletes its files.
    await env.server.waitForLog((l) => l.msg === 'connection lost; session kept for resume', 5000);
    const gone = await pollUntil(async () => (await listFilesRecursive(env.store)).length === 0, ttlMs + 3000);
    const goneAfter = Date.now() - exitedAt;
    assert.ok(gone, `temporary files left: ${(await listFilesRecursive(env.store)).join(', ')}\n${serverTail(env.server)}`);
    assert.ok(goneAfter <= ttlMs + 1500, `temp file removed ${goneAfter} ms after the agent exited (ttl ${ttlMs} ms)`);
    const discarded = await env.server.waitForLog((l) => l.msg === 'session discarded', 1000);
    assert.match(String(discarded.reason), /not resumed within 2s/);
    assert.equal(logsWith(env.server.logs(), 'session committed').length, 0);
    assertNoInternalError(env.server);
    report(t, { agentMs: run.durationMs, tempGoneAfterExitMs: goneAfter, stderr: run.stderr.trim() });
    // Nothing but that line: e.g. no MaxListenersExceededWarning from the re-join backoff sleeps.
    assert.deepEqual(
      run.stderr.split('\n').filter((l) => l.trim() !== ''),
      [run.stderr.split('\n').find((l) => l.startsWith('nbackup-agent: '))],
      'stderr holds only the failure line',
    );
  });
});

// ─── 5. one slow stream, bounded server memory ────────────────────────────────────────────────

test('one stream throttled to 256 KiB/s: the server spills out-of-order chunks, pending memory ≤ 1 MiB, RSS bounded, no false timeouts', { timeout: TEST_TIMEOUT }, async (t) => {
  const memLimit = 1 * MiB;
  const env = await setup('slow', { storage: { assembler_pending_mem_limit: '1mb' } });
  const rssAtStart = peakRss(env.server.proc.pid);
  const plan: ConnPlan[] = [{ forward: true }, { throttleBytesPerSec: 256 * KiB }, { forward: true }, { forward: true }, { forward: true }];
  // A 32 MiB ring: the fast streams may run up to 32 MiB ahead of the slow one (far beyond the
  // server's 1 MiB), and each stream's window is 4 MiB = 16 chunks, which the slow stream needs
  // 16 s to deliver: three times read_timeout (5 s).
  const ring = 32 * MiB;
  await withProxy(env, plan, async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port, { bufferSize: ring });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, showRun(run));
    const rssPeak = peakRss(env.server.proc.pid);
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env.server);

    const slow = proxy.conns[1].bytesClientToServer;
    const fast = proxy.conns.slice(2, 1 + STREAMS).map((c) => c.bytesClientToServer);
    const assembled = oneLog(env.server.logs(), 'parallel session assembled', 'server');
    const peakPending = Number(assembled.peakPendingMem);
    const rssGrowth = rssPeak - rssAtStart;
    const lost = logsWith(run.logs, 'stream connection lost; re-joining');
    report(t, {
      archive: size,
      slowStreamBytes: slow,
      fastStreamBytes: fast,
      connections: proxy.connections,
      peakPendingMem: peakPending,
      spilled: assembled.spilled,
      spilledBytes: assembled.spilledBytes,
      duplicates: assembled.duplicates,
      rssAtStart,
      rssPeak,
      rssGrowth,
      falseTimeouts: lost.length,
      agentMs: run.durationMs,
    });
    assert.equal(assembled.chunks, Math.ceil(size / CHUNK));
    assert.ok(Number(assembled.spilled) > 0, 'chunks ahead of the slow stream spilled to the staging file');
    assert.ok(Number(assembled.spilledBytes) >= Number(assembled.spilled) * CHUNK * 0.5);
    assert.ok(
      peakPending > 0 && peakPending <= memLimit,
      `peakPendingMem ${peakPending} exceeds assembler_pending_mem_limit ${memLimit} (by ${peakPending - memLimit} bytes)`,
    );
    // Peak RSS growth over the server's own footprint at start. Measured on 2 cores, Node 20: 27–40
    // MiB, the same as the fault-free baseline of test 1 (32–36 MiB), so the slow stream and the
    // spilling add nothing measurable. It is mostly garbage awaiting V8's GC: every chunk is a
    // fresh 256 KiB Buffer and V8 collects external memory lazily, so the growth tracks the
    // archive size (29 MiB) rather than what is retained. 56 MiB = the largest measurement +
    // 16 MiB: it catches gross retention (the 32 MiB skew, the staging file or the archive held
    // in memory on top of the normal garbage), not a few MiB; peakPendingMem is the sharp check.
    const rssBound = 56 * MiB;
    assert.ok(rssGrowth <= rssBound, `server peak RSS grew by ${mib(rssGrowth)} (${mib(rssAtStart)} → ${mib(rssPeak)}), bound ${mib(rssBound)}`);

    // A slow stream is not a dead one, and neither are the streams waiting on it: no connection
    // was dropped, by the agent's read_timeout or by the server's idle_timeout.
    const idle = env.server.logs().filter((l) => /nothing received for/.test(String(l.err)));
    assert.deepEqual(
      {
        connections: proxy.connections,
        agentDropped: lost.map((l) => `${String(l.err)} (${String(l.unacknowledged)} chunks unacknowledged)`),
        serverDropped: idle.map((l) => String(l.err)),
      },
      // The control of the session, its streams, and the index sent after the commit.
      { connections: 1 + STREAMS + INDEX, agentDropped: [], serverDropped: [] },
      'no stream was taken for dead',
    );
    assertJoins(env.server, 0);
  });
});

/**
 * Parallel sessions (spec §3): the real agent and server, four data streams through the TCP fault
 * proxy on 127.0.0.1. The proxy sees the connections in order: #0 is the primary, #1..#4 are the
 * data streams (in join order), anything later is a re-join.
 *
 * The source is the shared test tree plus 24 MiB of incompressible bulk, cut into 256 KiB chunks
 * (≈ 115 chunks), so every stream carries many chunks and a cut always lands mid-transfer.
 * Tests 6–9 drive the server directly with a raw mTLS client (PJIN / chunk limits, a stream or a
 * primary that half-closes, a session that expires with chunks waiting).
 *
 * Each test prints its figures (bytes on the wire, peakPendingMem, spilled, RSS …) as a diagnostic.
 */
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { AckStatus, CHUNK_HEADER_SIZE, FinalStatus, HealthStatus, ParallelStatus } from '../../protocol/constants.js';
import {
  decodeAck,
  decodeChunkSack,
  decodeFinalAck,
  decodeParallelAck,
  encodeChunkHeader,
  encodeHandshake,
  encodeParallelInit,
  encodeParallelJoin,
  encodeTrailer,
  type ParallelAck,
} from '../../protocol/frames.js';
import { REJOIN_ATTEMPTS } from '../../src/agent/session/data-stream.js';
import { assertTreesEqual } from '../helpers/compare.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type AgentResult, type LogLine, type ServerHandle } from '../helpers/proc.js';
import { startProxy, type ConnPlan, type Proxy } from '../helpers/proxy.js';
import { gnuTarExtract, gzipTest } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, randomBytesSeeded } from '../helpers/tree.js';
import {
  agentConfigObject,
  committedBackups,
  listFilesRecursive,
  pollUntil,
  rawConnect,
  rawHealth,
  writeServerConfig,
  type RawClient,
  type StorageSpec,
} from './harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const STREAMS = 4;
const CHUNK = 256 * KiB;
const BUFFER = 8 * MiB;
/** The agent's per-stream window of unacknowledged bytes (src/agent/parallel-job.ts). */
const WINDOW = Math.max(2 * CHUNK, Math.floor(BUFFER / (2 * STREAMS)));
/** Backoff before the 1st, 2nd, 3rd re-join: 200 + 400 + 800 ms. */
const RETRY = { max_attempts: 3, initial_delay: '200ms', max_delay: '2s', connect_timeout: '5s', read_timeout: '5s' };
const TEST_TIMEOUT = 90_000;

const tmp = new TempDirs();
let pki: Pki;
let src: string;
let tree: Awaited<ReturnType<typeof makeTree>>;

before(async () => {
  const dir = await tmp.make('nbk-par-');
  pki = await makePki(path.join(dir, 'pki'), { agents: ['agent-a'] });
  src = path.join(dir, 'src');
  tree = await makeTree(src);
  fs.mkdirSync(path.join(src, 'bulk'));
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(src, 'bulk', `r${i}.bin`), randomBytesSeeded(8 * MiB, 300 + i));
});
after(() => tmp.cleanup());

// ─── shared set-up ────────────────────────────────────────────────────────────────────────────

interface Env {
  dir: string;
  store: string;
  server: ServerHandle;
}

async function setup(name: string, opts: { storage?: Record<string, unknown>; server?: Record<string, unknown> } = {}): Promise<Env> {
  const dir = await tmp.make(`nbk-par-${name}-`);
  const store = path.join(dir, 'store');
  const main = { base_dir: store, max_backups: 3, ...opts.storage } as StorageSpec;
  await writeServerConfig(path.join(dir, 'server.yaml'), pki, { main }, opts.server ?? {});
  const server = await startServer(path.join(dir, 'server.yaml'));
  return { dir, store, server };
}

/** agent.yaml: one entry, `parallels: 4` with every stream at once, 256 KiB chunks, fast retries. */
async function agentYaml(dir: string, port: number, opts: { bufferSize?: number; autoscaler?: boolean } = {}): Promise<string> {
  const cfg = agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
  const entry = (cfg.backups as Record<string, unknown>[])[0];
  Object.assign(entry, {
    parallels: STREAMS,
    auto_scaler: { enabled: opts.autoscaler ?? false },
    resume: { buffer_size: opts.bufferSize ?? BUFFER, chunk_size: CHUNK },
  });
  cfg.retry = RETRY;
  const file = path.join(dir, 'agent.yaml');
  await writeYaml(file, cfg);
  return file;
}

/** Waits until the proxy has seen every connection from #`from` on end (the agent has exited by then). */
async function settled(proxy: Proxy, from = 0): Promise<void> {
  await proxy.waitFor(
    (p) => p.conns.slice(from).every((c) => c.state !== 'open' && c.state !== 'connecting' && c.state !== 'resetting'),
    5000,
    'all connections ended',
  );
}

async function withProxy<T>(env: Env, plan: ConnPlan[], fn: (proxy: Proxy) => Promise<T>): Promise<T> {
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan });
  try {
    return await fn(proxy);
  } finally {
    await proxy.close();
    await env.server.stop();
  }
}

function describeRun(run: AgentResult): string {
  return `exit ${run.code} after ${run.durationMs} ms\n--- stderr ---\n${run.stderr}\n--- stdout ---\n${run.stdout.split('\n').slice(-60).join('\n')}`;
}

function logsWith(logs: LogLine[], msg: string): LogLine[] {
  return logs.filter((l) => l.msg === msg);
}

function oneLog(logs: LogLine[], msg: string, where: string): LogLine {
  const found = logsWith(logs, msg);
  assert.equal(found.length, 1, `${where}: expected one "${msg}" line, got ${found.length}`);
  return found[0];
}

/** gzip -t, GNU tar restores the source exactly, one committed file, no .tmp / .staging.tmp left. */
async function restoreAndCompare(env: Env): Promise<{ file: string; size: number }> {
  const backupDir = path.join(env.store, 'agent-a', 'app');
  const files = (await committedBackups(backupDir)).map((f) => path.join(backupDir, path.basename(f)));
  assert.equal(files.length, 1, `exactly one committed backup, got ${files.join(', ')}`);
  await gzipTest(files[0]);
  const out = path.join(env.dir, 'restore');
  await gnuTarExtract(files[0], out);
  await assertTreesEqual(src, path.join(out, src.slice(1)), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });
  const all = await listFilesRecursive(env.store);
  assert.deepEqual(
    all.filter((f) => f.endsWith('.tmp') || f.includes('staging')),
    [],
    'no temporary or staging file left',
  );
  assert.deepEqual(all, [`agent-a/app/${path.basename(files[0])}`], 'nothing but the committed file');
  return { file: files[0], size: fs.statSync(files[0]).size };
}

/** The server saw exactly streams 0..3 join once each (no re-join unless `rejoins`). */
function assertJoins(server: ServerHandle, rejoins: number): void {
  const joined = logsWith(server.logs(), 'stream joined').map((l) => Number(l.stream));
  assert.deepEqual(
    [...joined].sort((a, b) => a - b),
    [0, 1, 2, 3],
    `the server logged ${STREAMS} streams joining, got ${JSON.stringify(joined)}`,
  );
  assert.equal(logsWith(server.logs(), 'stream re-joined').length, rejoins, 'stream re-joins on the server');
}

/** The server never hit an internal error (cmd/ logs unhandled rejections and serves on). */
function assertNoInternalError(env: Env): void {
  const bad = env.server.logs().filter((l) => typeof l.msg === 'string' && l.msg.startsWith('internal error'));
  assert.deepEqual(bad, [], `the server logged internal errors\n${serverTail(env, 30)}`);
  assert.equal(env.server.proc.exitCode, null, `the server is still running\n${serverTail(env, 30)}`);
}

/** Peak resident set size (VmHWM) of a live process, in bytes. */
function peakRss(pid: number | undefined): number {
  assert.ok(pid, 'server pid');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmHWM in /proc/<pid>/status');
  return Number(m[1]) * KiB;
}

function serverTail(env: Env, lines = 80): string {
  return `--- server output ---\n${env.server.output().slice(-lines).join('\n')}`;
}

const mib = (n: number): string => `${(n / MiB).toFixed(2)} MiB`;
/** Figures for the record: a TAP diagnostic of the test. */
function report(t: TestContext, figures: Record<string, unknown>): void {
  t.diagnostic(JSON.stringify(figures));
}

// ─── 1. baseline ──────────────────────────────────────────────────────────────────────────────

test('parallels: 4 without faults: four streams, exact restore, one committed file', { timeout: TEST_TIMEOUT }, async (t) => {
  const env = await setup('base');
  const rssAtStart = peakRss(env.server.proc.pid);
  await withProxy(env, [], async (proxy) => {
    const cfg = await agentYaml(env.dir, proxy.port);
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, describeRun(run));
    const rssPeak = peakRss(env.server.proc.pid);
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env);

    assert.equal(proxy.connections, 1 + STREAMS, 'the primary and four data streams, nothing else');
    assertJoins(env.server, 0);
    const started = oneLog(run.logs, 'parallel session started', 'agent');
    assert.equal(started.maxStreams, STREAMS);
    assert.equal(started.streams, STREAMS, 'auto_scaler disabled: every stream from the start');
    const finished = oneLog(run.logs, 'parallel streams finished', 'agent');
    assert.deepEqual(finished.streams, [0, 1, 2, 3].map((stream) => ({ stream, joins: 1, state: 'done' })));

    const assembled = oneLog(env.server.logs(), 'parallel session assembled', 'server');
    const chunks = Math.ceil(size / CHUNK);
    assert.equal(assembled.chunks, chunks, 'every chunk once');
    assert.equal(assembled.duplicates, 0);
    assert.equal(assembled.streams, STREAMS);
    // Every data stream carried a share of the chunks.
    const perConn = proxy.conns.slice(1).map((c) => c.bytesClientToServer);
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
    assert.equal(run.code, 0, describeRun(run));
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env);

    assert.deepEqual(
      proxy.conns.slice(0, 5).map((c) => c.state),
      ['closed', 'reset', 'reset', 'closed', 'reset'],
      'every planned cut happened',
    );
    assert.equal(proxy.connections, 1 + STREAMS + cuts, 'one re-join per cut, nothing else');
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
    assert.equal(run.code, 0, describeRun(run));
    await restoreAndCompare(env);
    assertNoInternalError(env);
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
    assert.equal(run.code, 0, describeRun(run));
    await restoreAndCompare(env);
    assertNoInternalError(env);
    const started = oneLog(run.logs, 'parallel session started', 'agent');
    assert.equal(started.streams, 1, 'starts with one stream');
    const adds = logsWith(run.logs, 'autoscaler: adding a stream');
    assert.ok(adds.length >= 2, `expected at least two additions, got ${adds.length}:\n${describeRun(run)}`);
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
    assert.equal(run.code, 0, describeRun(run));
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env);

    assert.equal(proxy.connections, 1 + STREAMS + REJOIN_ATTEMPTS, 'no other stream reconnected');
    assert.deepEqual(
      proxy.conns.map((c) => c.state),
      ['closed', 'reset', 'closed', 'closed', 'closed', ...refusals.map(() => 'refused')],
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
    assert.notEqual(run.code, 0, describeRun(run));
    assert.equal(run.code, 1, describeRun(run));
    // The data streams (the primary's server side is test 9's business).
    await settled(proxy, 1);
    assert.match(
      run.stderr,
      new RegExp(`^nbackup-agent: backup "app" failed: all ${STREAMS} parallel streams are dead`, 'm'),
      'one clear stderr line',
    );
    assert.equal(logsWith(run.logs, 'stream is dead; its unacknowledged chunks go to the live streams').length, STREAMS);
    assert.equal(proxy.connections, 1 + STREAMS + STREAMS * REJOIN_ATTEMPTS, 'three re-joins per stream, then nothing');
    assert.deepEqual(
      proxy.conns.slice(1, 1 + STREAMS).map((c) => c.state),
      cutsAt.map(() => 'reset'),
      describeRun(run),
    );

    const backupDir = path.join(env.store, 'agent-a', 'app');
    assert.deepEqual(await committedBackups(backupDir), [], 'nothing committed');
    // The session waits (detached) for session_ttl, then the server deletes its files.
    await env.server.waitForLog((l) => l.msg === 'connection lost; session kept for resume', 5000);
    const gone = await pollUntil(async () => (await listFilesRecursive(env.store)).length === 0, ttlMs + 3000);
    const goneAfter = Date.now() - exitedAt;
    assert.ok(gone, `temporary files left: ${(await listFilesRecursive(env.store)).join(', ')}\n${serverTail(env)}`);
    assert.ok(goneAfter <= ttlMs + 1500, `temp file removed ${goneAfter} ms after the agent exited (ttl ${ttlMs} ms)`);
    const discarded = await env.server.waitForLog((l) => l.msg === 'session discarded', 1000);
    assert.match(String(discarded.reason), /not resumed within 2s/);
    assert.equal(logsWith(env.server.logs(), 'session committed').length, 0);
    assertNoInternalError(env);
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
    assert.equal(run.code, 0, describeRun(run));
    const rssPeak = peakRss(env.server.proc.pid);
    const { size } = await restoreAndCompare(env);
    await settled(proxy);
    assertNoInternalError(env);

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
    const idle = env.server.logs().filter((l) => /sent nothing for/.test(String(l.err)));
    assert.deepEqual(
      {
        connections: proxy.connections,
        agentDropped: lost.map((l) => `${String(l.err)} (${String(l.unacknowledged)} chunks unacknowledged)`),
        serverDropped: idle.map((l) => String(l.err)),
      },
      { connections: 1 + STREAMS, agentDropped: [], serverDropped: [] },
      'no stream was taken for dead',
    );
    assertJoins(env.server, 0);
  });
});

// ─── 6–9. raw mTLS client ─────────────────────────────────────────────────────────────────────

async function rawOpen(env: Env): Promise<RawClient> {
  const agent = pki.agents['agent-a'];
  const c = rawConnect({ port: env.server.port, ca: pki.caCert, cert: agent.cert, key: agent.key });
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
  primary.write(encodeHandshake({ agent: 'agent-a', storage: 'main', backup }));
  const ack = await primary.read(decodeAck, 5000, 'ACK');
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
    assert.equal((await rawHealth(env.server.port, pki)).status, HealthStatus.BUSY, 'the server still serves (a session is running)');

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
    primary.write(encodeTrailer({ sha256: createHash('sha256').update(whole).digest(), size: whole.length }));
    primary.socket.end();
    assert.deepEqual(await primary.read(decodeFinalAck, 5000, 'Final ACK'), { status: FinalStatus.OK });
    const dir = path.join(env.store, 'agent-a', 'raw');
    const committed = await committedBackups(dir);
    assert.equal(committed.length, 1);
    assert.ok(fs.readFileSync(path.join(dir, committed[0])).equals(whole), 'the chunks, in globalSeq order');
    assert.equal((await rawHealth(env.server.port, pki)).status, HealthStatus.READY);
    assertNoInternalError(env);
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
    primary.write(encodeTrailer({ sha256: createHash('sha256').update(whole).digest(), size: whole.length }));
    primary.socket.end();
    assert.deepEqual(await primary.read(decodeFinalAck, 5000, 'Final ACK'), { status: FinalStatus.OK });
    assertNoInternalError(env);
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
    assert.equal(env.server.proc.exitCode, null, `the server survived discarding the session\n${serverTail(env, 30)}`);
    assert.ok(clean, `temporary and staging files removed: ${(await listFilesRecursive(env.store)).join(', ')}`);
    assert.equal((await rawHealth(env.server.port, pki)).status, HealthStatus.READY, 'the server still serves');
    assertNoInternalError(env);
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
    assertNoInternalError(env);
  } finally {
    for (const c of clients) c.destroy();
    await env.server.stop();
  }
});

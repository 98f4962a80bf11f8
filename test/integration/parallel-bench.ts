/**
 * The test bench of the parallel-session suites (parallel*.test.ts): the figures of the agent's
 * parallel mode under test, a workspace with agent-a's PKI and (optionally) a source of the shared
 * test tree plus 24 MiB of incompressible bulk, one server per test, and the proxy and server
 * checks those tests share.
 *
 * The per-test helpers are arrow-function properties, so a suite may destructure them.
 *
 * Not a test file itself (it has no tests); `node --test` may still load it, harmlessly.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import type { ServerHandle } from '../helpers/proc.js';
import { startProxy, type ConnPlan, type Proxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import type { TreeInfo } from '../helpers/tree.js';
import { logsWith, makeSource, makeWorkspace, restoreTheBackup, startEnv, writeAppAgentYaml, type Env } from './harness.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const STREAMS = 4;
export const CHUNK = 256 * KiB;
export const BUFFER = 8 * MiB;
/** The agent's per-stream window of unacknowledged bytes (src/agent/session/parallel-runner.ts). */
export const WINDOW = Math.max(2 * CHUNK, Math.floor(BUFFER / (2 * STREAMS)));
/** Backoff before the 1st, 2nd, 3rd re-join: 200 + 400 + 800 ms. */
export const RETRY = { max_attempts: 3, initial_delay: '200ms', max_delay: '2s', connect_timeout: '5s', read_timeout: '5s' };
export const TEST_TIMEOUT = 90_000;

export class ParallelBench {
  readonly tmp = new TempDirs();
  pki!: Pki;
  /** The source (only after start({ source: true })). */
  tree!: TreeInfo;

  /** The workspace and PKI; with `source`, the test tree plus 3 × 8 MiB of incompressible bulk. */
  async start(o: { source: boolean }): Promise<void> {
    const ws = await makeWorkspace(this.tmp, 'nbk-par-', ['agent-a']);
    this.pki = ws.pki;
    if (o.source) this.tree = await makeSource(path.join(ws.work, 'src'), { files: 3, size: 8 * MiB, seed: 300 });
  }

  stop(): Promise<void> {
    return this.tmp.cleanup();
  }

  /** A fresh directory and a started server with storage "main" (plus `storage`, `server` settings). */
  setup = (name: string, opts: { storage?: Record<string, unknown>; server?: Record<string, unknown> } = {}): Promise<Env> =>
    startEnv(this.tmp, this.pki, `nbk-par-${name}-`, opts);

  /** agent.yaml: one entry, `parallels: 4` with every stream at once, 256 KiB chunks, fast retries. */
  agentYaml = (dir: string, port: number, opts: { bufferSize?: number; autoscaler?: boolean } = {}): Promise<string> =>
    writeAppAgentYaml(dir, this.pki, port, this.tree, { retry: RETRY }, {
      parallels: STREAMS,
      auto_scaler: { enabled: opts.autoscaler ?? false },
      resume: { buffer_size: opts.bufferSize ?? BUFFER, chunk_size: CHUNK },
    });

  /** gzip -t, GNU tar restores the source exactly, one committed file, no .tmp / .staging.tmp left. */
  restoreAndCompare = (env: Env): Promise<{ file: string; size: number }> => restoreTheBackup(env, this.tree, { onlyFile: true });
}

/** Waits until the proxy has seen every connection from #`from` on end (the agent has exited by then). */
export async function settled(proxy: Proxy, from = 0): Promise<void> {
  await proxy.waitFor(
    (p) => p.conns.slice(from).every((c) => c.state !== 'open' && c.state !== 'connecting' && c.state !== 'resetting'),
    5000,
    'all connections ended',
  );
}

/** Runs `fn` with a TCP fault proxy in front of env's server; closes the proxy and stops the server after. */
export async function withProxy<T>(env: Env, plan: ConnPlan[], fn: (proxy: Proxy) => Promise<T>): Promise<T> {
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan });
  try {
    return await fn(proxy);
  } finally {
    await proxy.close();
    await env.server.stop();
  }
}

/** The server saw exactly streams 0..3 join once each (no re-join unless `rejoins`). */
export function assertJoins(server: ServerHandle, rejoins: number): void {
  const joined = logsWith(server.logs(), 'stream joined').map((l) => Number(l.stream));
  assert.deepEqual(
    [...joined].sort((a, b) => a - b),
    [0, 1, 2, 3],
    `the server logged ${STREAMS} streams joining, got ${JSON.stringify(joined)}`,
  );
  assert.equal(logsWith(server.logs(), 'stream re-joined').length, rejoins, 'stream re-joins on the server');
}

/** Peak resident set size (VmHWM) of a live process, in bytes. */
export function peakRss(pid: number | undefined): number {
  assert.ok(pid, 'server pid');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmHWM in /proc/<pid>/status');
  return Number(m[1]) * KiB;
}

export const mib = (n: number): string => `${(n / MiB).toFixed(2)} MiB`;

/** Figures for the record: a TAP diagnostic of the test. */
export function report(t: TestContext, figures: Record<string, unknown>): void {
  t.diagnostic(JSON.stringify(figures));
}

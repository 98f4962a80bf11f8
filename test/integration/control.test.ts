/**
 * The control channel and admission, against real servers over mTLS:
 *   - RTT and the server's load and free disk reach the agent's debug log; the server restarts on
 *     the same port and the channel comes back;
 *   - the control connection is cut (proxy RST) in the middle of a parallel backup, which still
 *     commits and restores exactly;
 *   - max_concurrent_sessions: 1 with three agents started together: all exit 0, never two
 *     sessions at once on the server, and the deferred ones said they waited.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, spawnLogged, startServer, writeYaml, type LogLine } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';
import { decodeControlFromServer, encodeControlFromAgent, encodeControlOpen } from '../../protocol/frames.js';
import { rawAgent } from './raw-client.js';
import { agentConfigObject, committedBackups, makeSource, makeWorkspace, restoreAndCompare, showRun, startEnv, tmpFiles, writeServerConfig } from './harness.js';

const MiB = 1024 * 1024;
const tmp = new TempDirs();
let pki: Pki;
let work: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-ctrl-', ['agent-a', 'agent-b', 'agent-c']));
});
after(() => tmp.cleanup());

const CONTROL = { control_channel: { enabled: true, keepalive_interval: '1s', reconnect_delay: '200ms', max_reconnect_delay: '1s' } };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

describe('control channel', { timeout: 180_000 }, () => {
  it('logs RTT and server status at debug, and reconnects after the server restarts', async () => {
    const dir = await tmp.make('nbk-ctrl-rtt-');
    const port = await freePort();
    await writeServerConfig(join(dir, 'server.yaml'), pki, { main: { base_dir: join(dir, 'store') } }, { listen: `127.0.0.1:${port}` });
    let server = await startServer(join(dir, 'server.yaml'));
    const src = join(dir, 'src');
    fs.mkdirSync(src);
    const cfg = agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [src] }]);
    Object.assign(cfg, { daemon: CONTROL, logging: { level: 'debug', format: 'json' } });
    await writeYaml(join(dir, 'agent.yaml'), cfg);
    const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', join(dir, 'agent.yaml')]);
    try {
      const pong = await daemon.waitForLog((l) => l.msg === 'control pong', 10_000);
      assert.equal(typeof pong.rttMs, 'number');
      assert.ok((pong.rttMs as number) >= 0 && (pong.rttMs as number) < 1000, `rtt ${pong.rttMs}`);
      assert.ok(typeof pong.serverLoad === 'number' && pong.serverLoad >= 0 && pong.serverLoad <= 1);
      const free = Math.floor(fs.statfsSync(dir).bavail * fs.statfsSync(dir).bsize / MiB);
      assert.ok(Math.abs((pong.serverFreeMiB as number) - free) < 1024, `free ${pong.serverFreeMiB} MiB vs statfs ${free} MiB of the storage's filesystem`);
      await server.waitForLog((l) => l.msg === 'control channel opened' && l.agent === 'agent-a');
      await server.stop();
      await daemon.waitForLog((l) => l.msg === 'control channel down; reconnecting', 10_000);
      server = await startServer(join(dir, 'server.yaml'));
      await server.waitForLog((l) => l.msg === 'control channel opened' && l.agent === 'agent-a', 15_000);
      const ups = () => daemon.logs().filter((l) => l.msg === 'control channel up').length;
      await waitUntil(() => ups() >= 2, 10_000, 'the channel up again', () => daemon.output().slice(-20).join('\n'));
    } finally {
      await daemon.stop();
      await server.stop();
    }
    assert.equal(daemon.proc.exitCode, 0);
  });

  it('the server answers pings with its status and closes a channel silent for 2.5 × its keepalive', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrl-dead-');
    const c = rawAgent(env.server.port, pki, 'agent-a');
    try {
      await c.connected();
      c.write(encodeControlOpen({ keepaliveSeconds: 1 }));
      c.write(encodeControlFromAgent({ type: 'ping', timestampNs: 42n }));
      const pong = await c.read(decodeControlFromServer, 5000, 'pong');
      assert.equal(pong.type, 'pong');
      assert.equal(pong.type === 'pong' && pong.timestampNs, 42n, 'the timestamp is echoed');
      // Then silence: closed by the server after about 2.5 s (not before 2 s).
      const t0 = Date.now();
      await c.waitClosed(10_000);
      const after = Date.now() - t0;
      assert.ok(after >= 2000 && after < 5000, `closed ${after} ms after the last frame`);
      await env.server.waitForLog((l) => l.msg === 'control channel dead' && l.agent === 'agent-a');
    } finally {
      c.destroy();
      await env.server.stop();
    }
  });

  it("the server's small replies go out at once: the first pong after TLS is not held back by Nagle's algorithm", async () => {
    // With Nagle on at the server, a reply written while its previous small segment is not yet
    // acknowledged waits for the agent's delayed ACK (40 ms on Linux) on every new connection:
    // each session handshake, control channel, list or restore. Measured here before the fix:
    // 45-50 ms; after: ~4 ms. Eight fresh connections, median time from ping to pong.
    const env = await startEnv(tmp, pki, 'nbk-ctrl-nodelay-');
    try {
      const times: number[] = [];
      for (let i = 0; i < 8; i++) {
        const c = rawAgent(env.server.port, pki, 'agent-a');
        try {
          await c.connected();
          c.tcp.setNoDelay(true); // as the agent does (connect-server.ts)
          const t0 = performance.now();
          c.write(encodeControlOpen({ keepaliveSeconds: 30 }));
          c.write(encodeControlFromAgent({ type: 'ping', timestampNs: BigInt(i) }));
          const pong = await c.read(decodeControlFromServer, 5000, 'pong');
          times.push(performance.now() - t0);
          assert.equal(pong.type, 'pong');
        } finally {
          c.destroy();
        }
      }
      times.sort((a, b) => a - b);
      assert.ok(times[4] < 30, `ping → pong on a fresh connection: ${times.map((t) => t.toFixed(1)).join(', ')} ms`);
    } finally {
      await env.server.stop();
    }
  });

  it('a control connection cut in the middle of a parallel backup does not stop it: it commits and restores exactly', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrl-cut-');
    const src = join(work, 'cut-src');
    const tree = await makeSource(src, { files: 4, size: 4 * MiB, seed: 11 });
    // Slow enough (2 MiB/s per connection) that the cut lands mid-backup.
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 40 }, () => ({ throttleBytesPerSec: 2 * MiB })) });
    try {
      const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
      Object.assign((cfg.backups as Record<string, unknown>[])[0], { parallels: 3, auto_scaler: { enabled: false } });
      Object.assign(cfg, { daemon: CONTROL, retry: { max_attempts: 5, initial_delay: '200ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '15s' } });
      const yaml = join(env.dir, 'agent.yaml');
      await writeYaml(yaml, cfg);
      const run = runAgent(['--config', yaml, '--once'], { timeoutMs: 90_000 });
      // The control channel is the first connection (--once waits for it before the backup).
      await env.server.waitForLog((l) => l.msg === 'parallel session', 20_000);
      await waitUntil(() => proxy.conns.length >= 3, 10_000, 'data streams joined', () => JSON.stringify(proxy.conns));
      proxy.reset(0);
      const r = await run;
      assert.equal(r.code, 0, showRun(r));
      assert.ok(r.logs.some((l) => l.msg === 'control channel down; reconnecting'), 'the cut was seen');
      assert.ok(r.logs.some((l) => l.msg === 'backup committed'));
      const archives = await committedBackups(join(env.store, 'agent-a', 'app'));
      assert.equal(archives.length, 1);
      await restoreAndCompare(join(env.store, 'agent-a', 'app', archives[0]), tree, await tmp.make('nbk-ctrl-restore-'));
    } finally {
      await proxy.close();
      await env.server.stop();
    }
  });
});

describe('flow rotation', { timeout: 180_000 }, () => {
  it('the server rotates streams of a 4-stream backup again and again: exact restore, no payload written twice', async () => {
    // Every stream counts as slow (floor far above loopback): one rotation per 400 ms window.
    const env = await startEnv(tmp, pki, 'nbk-ctrl-rot-', { server: { flow_rotation: { enabled: true, min_throughput: '1tb', window: '400ms' } } });
    const src = join(work, 'rot-src');
    const tree = await makeSource(src, { files: 5, size: 3 * MiB, seed: 23 });
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 100 }, () => ({ throttleBytesPerSec: MiB })) });
    try {
      const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
      Object.assign((cfg.backups as Record<string, unknown>[])[0], { parallels: 4, auto_scaler: { enabled: false } });
      // A small ring keeps each stream's unacknowledged window (what a rotation drains) at 512 KiB.
      Object.assign(cfg, { daemon: CONTROL, resume: { buffer_size: '4mb', chunk_size: '256kb' } });
      const yaml = join(env.dir, 'agent.yaml');
      await writeYaml(yaml, cfg);
      const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 120_000 });
      assert.equal(r.code, 0, showRun(r));
      const asked = env.server.logs().filter((l) => l.msg === 'stream rotation asked').length;
      const acked = env.server.logs().filter((l) => l.msg === 'rotation acknowledged').length;
      const rotated = r.logs.filter((l) => l.msg === 'stream rotated; re-joining').length;
      console.log(JSON.stringify({ asked, acked, rotated }));
      assert.ok(rotated >= 3, `${rotated} rotations (asked ${asked}, acknowledged ${acked})`);
      assert.ok(acked >= rotated, 'each rotation was acknowledged with CRAK');
      const archives = await committedBackups(join(env.store, 'agent-a', 'app'));
      assert.equal(archives.length, 1);
      const archive = join(env.store, 'agent-a', 'app', archives[0]);
      const assembled = env.server.logs().find((l) => l.msg === 'parallel session assembled')!;
      assert.equal(assembled.duplicates, 0, 'no chunk arrived twice');
      // What the streams delivered is exactly the archive plus one 8-byte header per chunk.
      assert.equal(assembled.streamBytes, fs.statSync(archive).size + 8 * (assembled.chunks as number));
      await restoreAndCompare(archive, tree, await tmp.make('nbk-ctrl-rot-restore-'));
    } finally {
      await proxy.close();
      await env.server.stop();
    }
  });
});

describe('flow rotation by hand', { timeout: 120_000 }, () => {
  it('SIGUSR2 to the server rotates one stream of a running parallel backup', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrl-usr2-');
    const src = join(work, 'usr2-src');
    const tree = await makeSource(src, { files: 4, size: 2 * MiB, seed: 31 });
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 40 }, () => ({ throttleBytesPerSec: MiB })) });
    try {
      const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
      Object.assign((cfg.backups as Record<string, unknown>[])[0], { parallels: 2, auto_scaler: { enabled: false } });
      Object.assign(cfg, { daemon: CONTROL, resume: { buffer_size: '2mb', chunk_size: '256kb' } });
      const yaml = join(env.dir, 'agent.yaml');
      await writeYaml(yaml, cfg);
      const run = runAgent(['--config', yaml, '--once'], { timeoutMs: 90_000 });
      await env.server.waitForLog((l) => l.msg === 'stream joined' && l.stream === 1, 20_000);
      env.server.proc.kill('SIGUSR2');
      await env.server.waitForLog((l) => l.msg === 'stream rotation asked' && /SIGUSR2/.test(String(l.reason)));
      await env.server.waitForLog((l) => l.msg === 'rotation acknowledged', 20_000);
      const r = await run;
      assert.equal(r.code, 0, showRun(r));
      assert.equal(r.logs.filter((l) => l.msg === 'stream rotated; re-joining').length, 1);
      const archives = await committedBackups(join(env.store, 'agent-a', 'app'));
      await restoreAndCompare(join(env.store, 'agent-a', 'app', archives[0]), tree, await tmp.make('nbk-ctrl-usr2-restore-'));
    } finally {
      await proxy.close();
      await env.server.stop();
    }
  });
});

describe('admission', { timeout: 180_000 }, () => {
  it('max_concurrent_sessions 1, three agents at once: all exit 0, one session at a time, the others waited', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrl-adm-', { server: { max_concurrent_sessions: 1 } });
    const src = join(work, 'adm-src');
    fs.mkdirSync(src, { recursive: true });
    for (let i = 0; i < 3; i++) fs.writeFileSync(join(src, `r${i}.bin`), randomBytes(2 * MiB));
    // Each backup takes about 3 s through the throttle, so the three overlap if let in.
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 40 }, () => ({ throttleBytesPerSec: 2 * MiB })) });
    try {
      const agents = ['agent-a', 'agent-b', 'agent-c'];
      const runs = await Promise.all(
        agents.map(async (name, i) => {
          const cfg = agentConfigObject(pki, name, proxy.port, [{ name: 'app', storage: 'main', sources: [src] }]);
          // agent-c has no control channel: it learns of the limit from BUSY and retries.
          Object.assign(cfg, { daemon: i < 2 ? CONTROL : { control_channel: { enabled: false } } });
          const yaml = join(env.dir, `${name}.yaml`);
          await writeYaml(yaml, cfg);
          return runAgent(['--config', yaml, '--once'], { timeoutMs: 120_000 });
        }),
      );
      runs.forEach((r, i) => assert.equal(r.code, 0, `${agents[i]}: ${showRun(r)}`));
      for (const name of agents) assert.equal((await committedBackups(join(env.store, name, 'app'))).length, 1, name);
      // From the server's log: between a session's start and its end no other session starts.
      let open = 0;
      let peak = 0;
      for (const l of env.server.logs() as LogLine[]) {
        if (l.msg === 'session started') peak = Math.max(peak, ++open);
        if (l.msg === 'session committed' || l.msg === 'session discarded') open--;
      }
      assert.equal(peak, 1, 'never two sessions at once');
      assert.equal(env.server.logs().filter((l) => l.msg === 'session started').length, 3);
      const waited = runs.filter((r) => r.logs.some((l) => l.msg === 'server at capacity; waiting for admission'));
      assert.ok(waited.length >= 2, `${waited.length} agents said they waited`);
      assert.ok(runs.some((r) => r.logs.some((l) => l.msg === 'admitted by the server')), 'an agent with a control channel was admitted by CADM');
      assert.deepEqual(await tmpFiles(env.store), []);
    } finally {
      await proxy.close();
      await env.server.stop();
    }
  });
});

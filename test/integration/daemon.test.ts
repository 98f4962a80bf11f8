/**
 * The agent as a daemon against a real server: cron schedules with seconds, SIGTERM with and
 * without time to finish (shutdown_grace), a second signal, SIGTERM during a retry back-off, SIGHUP
 * reloads (logging applied and the log file reopened; an agent.name that no longer matches the
 * certificate refused, the old configuration kept) and `health` without an address. Slow backups
 * come from a throttling TCP proxy between agent and server.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, spawnLogged, writeYaml, type LoggedProcess } from '../helpers/proc.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';
import { agentConfigObject, makeDaemonSources, committedBackups, makeWorkspace, startEnv, tmpFiles, type Env } from './harness.js';

const MiB = 1024 * 1024;
const EVERY_2S = '*/2 * * * * *';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let small: string;
let big: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-daemon-', ['agent-a', 'agent-b']));
  ({ small, big } = makeDaemonSources(work));
});
after(() => tmp.cleanup());

interface DaemonRun {
  env: Env;
  daemon: LoggedProcess;
  yaml: string;
  cfg: Record<string, unknown>;
  backups: string;
  proxy?: Proxy;
}

/** A server, optionally a throttling proxy in front of it, and a daemon backing up `source`. */
async function startDaemon(name: string, source: string, o: { throttle?: number; top?: Record<string, unknown>; entry?: Record<string, unknown> } = {}): Promise<DaemonRun> {
  const env = await startEnv(tmp, pki, `nbk-daemon-${name}-`);
  let port = env.server.port;
  let proxy: Proxy | undefined;
  if (o.throttle) {
    proxy = await startProxy({ target: { host: '127.0.0.1', port }, plan: Array.from({ length: 50 }, () => ({ throttleBytesPerSec: o.throttle! })) });
    port = proxy.port;
  }
  const cfg = agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [source] }]);
  Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: EVERY_2S, ...o.entry });
  Object.assign(cfg, o.top);
  const yaml = join(env.dir, 'agent.yaml');
  await writeYaml(yaml, cfg);
  const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml]);
  await daemon.waitForLog((l) => l.msg === 'daemon started');
  return { env, daemon, yaml, cfg, backups: join(env.store, 'agent-a', 'app'), proxy };
}

async function finish(r: DaemonRun): Promise<void> {
  await r.daemon.stop(2000).catch(() => undefined);
  await r.proxy?.close();
  await r.env.server.stop();
}

const started = (r: DaemonRun) => r.daemon.waitForLog((l) => l.msg === 'backup started', 15_000);

describe('agent daemon', { timeout: 180_000 }, () => {
  it('runs a 6-field schedule again and again, and SIGTERM between backups exits 0', async () => {
    const r = await startDaemon('sched', small);
    try {
      await waitUntil(() => r.daemon.logs().filter((l) => l.msg === 'backup committed').length >= 3, 20_000, 'three scheduled commits', () => r.daemon.output().slice(-20).join('\n'));
      // health without an address asks the server of the config.
      const health = await runAgent(['health', '--config', r.yaml], { timeoutMs: 15_000 });
      assert.equal(health.code, 0, health.stderr);
      assert.match(health.stdout, /^READY free=/);
      const t0 = Date.now();
      r.daemon.proc.kill('SIGTERM');
      assert.deepEqual(await r.daemon.waitForExit(15_000), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 10_000);
      assert.ok((await committedBackups(r.backups)).length >= 1);
      assert.deepEqual(await tmpFiles(r.env.store), []);
    } finally {
      await finish(r);
    }
  });

  it('SIGTERM in the middle of a backup lets it finish within shutdown_grace, commits it, exits 0', async () => {
    const r = await startDaemon('grace', big, { throttle: MiB, top: { daemon: { shutdown_grace: '60s', control_channel: { enabled: false } } } });
    try {
      await started(r);
      r.daemon.proc.kill('SIGTERM');
      await r.daemon.waitForLog((l) => l.msg === 'shutting down' && l.waiting === true);
      assert.deepEqual(await r.daemon.waitForExit(60_000), { code: 0, signal: null });
      assert.ok(r.daemon.logs().some((l) => l.msg === 'backup committed'), 'the running backup finished');
      assert.equal((await committedBackups(r.backups)).length, 1);
      assert.deepEqual(await tmpFiles(r.env.store), []);
      assert.ok(!r.daemon.logs().some((l) => l.msg === 'backup started' && l !== r.daemon.logs().find((x) => x.msg === 'backup started')), 'no backup started after the signal');
    } finally {
      await finish(r);
    }
  });

  it('with a short shutdown_grace the backup is aborted: exit 0, nothing committed, the server drops the temporary file', async () => {
    const r = await startDaemon('short', big, { throttle: MiB, top: { daemon: { shutdown_grace: '1s', control_channel: { enabled: false } } } });
    try {
      const line = await started(r);
      const t0 = Date.now();
      r.daemon.proc.kill('SIGTERM');
      assert.deepEqual(await r.daemon.waitForExit(15_000), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 8000, `exited ${Date.now() - t0} ms after SIGTERM`);
      assert.ok(r.daemon.logs().some((l) => l.msg === 'shutdown grace is over: aborting the running backup'));
      assert.ok(r.daemon.logs().some((l) => l.msg === 'session given up' && l.server === 'discarded'), 'the server was told');
      await r.env.server.waitForLog((l) => l.msg === 'session discarded' && l.session === line.session && /aborted by the agent/.test(String(l.reason)));
      assert.deepEqual(await committedBackups(r.backups), []);
      assert.deepEqual(await tmpFiles(r.env.store), []);
    } finally {
      await finish(r);
    }
  });

  it('a second SIGTERM aborts at once (cleanly) instead of waiting for the backup', async () => {
    const r = await startDaemon('twice', big, { throttle: MiB, top: { daemon: { shutdown_grace: '5m', control_channel: { enabled: false } } } });
    try {
      await started(r);
      r.daemon.proc.kill('SIGTERM');
      await r.daemon.waitForLog((l) => l.msg === 'shutting down');
      const t0 = Date.now();
      r.daemon.proc.kill('SIGTERM');
      assert.deepEqual(await r.daemon.waitForExit(15_000), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 5000, `exited ${Date.now() - t0} ms after the second SIGTERM`);
      await r.env.server.waitForLog((l) => l.msg === 'session discarded' && /aborted by the agent/.test(String(l.reason)));
      assert.deepEqual(await committedBackups(r.backups), []);
      assert.deepEqual(await tmpFiles(r.env.store), []);
    } finally {
      await finish(r);
    }
  });

  it('--once: SIGTERM aborts the running backup, the server drops it, the next entry is not run, exit 143', async () => {
    const env = await startEnv(tmp, pki, 'nbk-once-term-');
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 50 }, () => ({ throttleBytesPerSec: MiB })) });
    const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [
      { name: 'app', storage: 'main', sources: [big] },
      { name: 'later', storage: 'main', sources: [small] },
    ]);
    const yaml = join(env.dir, 'agent.yaml');
    await writeYaml(yaml, cfg);
    const once = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml, '--once']);
    try {
      await once.waitForLog((l) => l.msg === 'backup started', 15_000);
      once.proc.kill('SIGTERM');
      assert.deepEqual(await once.waitForExit(15_000), { code: 143, signal: null });
      const out = once.output().join('\n');
      assert.match(out, /backup "app" failed: interrupted by SIGTERM/, out);
      assert.match(out, /backup "later" not run: interrupted by SIGTERM/, out);
      await env.server.waitForLog((l) => l.msg === 'session discarded' && /aborted by the agent/.test(String(l.reason)), 10_000);
      assert.deepEqual(await committedBackups(join(env.store, 'agent-a', 'app')), []);
      assert.deepEqual(await tmpFiles(env.store), []);
      assert.ok(!out.includes('    at '), `no stack trace:\n${out}`);
    } finally {
      await once.stop(2000).catch(() => undefined);
      await proxy.close();
      await env.server.stop();
    }
  });

  it('SIGTERM during a retry back-off stops at once instead of sleeping it out', async () => {
    // Nothing listens on the proxy's target once the server is gone: every connection fails.
    const r = await startDaemon('backoff', small, {
      top: { retry: { max_attempts: 5, initial_delay: '30s', max_delay: '1m', connect_timeout: '2s', read_timeout: '5s' } },
    });
    try {
      await r.env.server.stop();
      await r.daemon.waitForLog((l) => l.msg === 'connection failed; retrying' && l.delayMs === 30_000, 15_000);
      const t0 = Date.now();
      r.daemon.proc.kill('SIGTERM');
      assert.deepEqual(await r.daemon.waitForExit(15_000), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 5000, `exited ${Date.now() - t0} ms after SIGTERM, not after the 30 s back-off`);
    } finally {
      await finish(r);
    }
  });

  it('SIGHUP applies a changed logging section and reopens the log file (logrotate)', async () => {
    const env = await startEnv(tmp, pki, 'nbk-daemon-hup-');
    const logFile = join(env.dir, 'agent.log');
    const cfg = agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'app', storage: 'main', sources: [small] }]);
    Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: '0 0 1 1 *' });
    cfg.logging = { level: 'info', format: 'json', file: logFile };
    const yaml = join(env.dir, 'agent.yaml');
    await writeYaml(yaml, cfg);
    const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml]);
    try {
      await waitUntil(() => fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').includes('daemon started'), 10_000, 'daemon started in the log file', () => daemon.output().join('\n'));
      // logrotate: the file is renamed, the daemon is told to reopen.
      fs.renameSync(logFile, `${logFile}.1`);
      cfg.logging = { level: 'debug', format: 'text', file: logFile };
      Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: EVERY_2S });
      await writeYaml(yaml, cfg);
      daemon.proc.kill('SIGHUP');
      await waitUntil(() => fs.existsSync(logFile) && /INFO backup committed/.test(fs.readFileSync(logFile, 'utf8')), 20_000, 'a text-format commit line in the reopened file', () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : 'no file') + daemon.output().join('\n'));
      const text = fs.readFileSync(logFile, 'utf8');
      assert.match(text, /INFO configuration reloaded/);
      assert.match(text, /DEBUG /, 'level debug applied');
      assert.ok(!fs.readFileSync(`${logFile}.1`, 'utf8').includes('backup committed'), 'nothing more went to the rotated file');
      daemon.proc.kill('SIGTERM');
      assert.deepEqual(await daemon.waitForExit(15_000), { code: 0, signal: null });
    } finally {
      await daemon.stop(2000).catch(() => undefined);
      await env.server.stop();
    }
  });

  it('SIGHUP with an agent.name that no longer matches the certificate is refused and the old configuration keeps working', async () => {
    const r = await startDaemon('badname', small);
    try {
      await r.daemon.waitForLog((l) => l.msg === 'backup committed', 15_000);
      await writeYaml(r.yaml, { ...r.cfg, agent: { name: 'agent-b' } });
      r.daemon.proc.kill('SIGHUP');
      const refused = await r.daemon.waitForLog((l) => l.msg === 'reload failed; keeping the previous configuration');
      assert.match(String(refused.err), /agent\.name "agent-b" does not match the CN "agent-a"/);
      const before = r.daemon.logs().filter((l) => l.msg === 'backup committed').length;
      await waitUntil(() => r.daemon.logs().filter((l) => l.msg === 'backup committed').length > before, 15_000, 'a commit after the refused reload', () => r.daemon.output().slice(-20).join('\n'));
      assert.ok(!r.env.server.logs().some((l) => l.msg === 'session refused'), 'the server never saw agent-b');
    } finally {
      await finish(r);
    }
  });
});

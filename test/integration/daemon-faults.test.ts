/**
 * The agent as a daemon under faults, against a real server over mTLS on 127.0.0.1: signals that
 * come together or while the server does not answer, reloads of a configuration that has become
 * invalid or that changes an entry whose backup is running, the server down at a scheduled time
 * or restarted in the middle of a backup, and the daemon's clock set back and forward (faketime),
 * on its own and while a link is dead.
 * Slow backups come from a throttling TCP proxy; a server that accepts but never answers is a
 * proxy that stalls every connection.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { faketimeFileEnv } from '../helpers/faketime.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { AGENT_BIN, spawnLogged, startServer, writeYaml, type LoggedProcess, type LogLine, type ServerHandle } from '../helpers/proc.js';
import { startProxy, type ConnPlan, type Proxy } from '../helpers/proxy.js';
import { writeAndClose, writerOnceRead } from '../helpers/fifo.js';
import { TempDirs } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';
import { agentConfigObject, makeDaemonSources, committedBackups, makeWorkspace, startEnv, tmpFiles, waitForTempBytes, writeServerConfig, type Env } from './harness.js';

const MiB = 1024 * 1024;
const EVERY_2S = '*/2 * * * * *';
const YEARLY = '0 0 1 1 *';
const CONTROL_ON = { control_channel: { enabled: true, reconnect_delay: '500ms', max_reconnect_delay: '2s' } };

const tmp = new TempDirs();
let pki: Pki;
/** The same agent and server names, issued two days ago: an agent clock an hour back accepts them. */
let oldPki: Pki;
let work: string;
let small: string;
let big: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-dfaults-', ['agent-a']));
  oldPki = await makePki(join(work, 'pki-old'), { agents: ['agent-a'], backdateDays: 2 });
  ({ small, big } = makeDaemonSources(work));
});
after(() => tmp.cleanup());

interface DaemonRun {
  env: Env;
  daemon: LoggedProcess;
  yaml: string;
  cfg: Record<string, unknown>;
  proxy?: Proxy;
  /** The server now (a test may restart it). */
  server: ServerHandle;
}

interface DaemonOptions {
  /** Proxy plans for the agent's connections (all of them when given; throttle is a shorthand). */
  plan?: ConnPlan[];
  throttle?: number;
  top?: Record<string, unknown>;
  entry?: Record<string, unknown>;
  pki?: Pki;
  env?: Record<string, string>;
}

/** A server, optionally a proxy in front of it, and a daemon backing up `source` every 2 s. */
async function startDaemon(name: string, source: string, o: DaemonOptions = {}): Promise<DaemonRun> {
  const certs = o.pki ?? pki;
  const env = await startEnv(tmp, certs, `nbk-dfaults-${name}-`);
  let port = env.server.port;
  let proxy: Proxy | undefined;
  const plan = o.plan ?? (o.throttle ? Array.from({ length: 50 }, () => ({ throttleBytesPerSec: o.throttle! })) : undefined);
  if (plan) {
    proxy = await startProxy({ target: { host: '127.0.0.1', port }, plan });
    port = proxy.port;
  }
  const cfg = agentConfigObject(certs, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [source] }]);
  Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: EVERY_2S, ...o.entry });
  Object.assign(cfg, o.top);
  const yaml = join(env.dir, 'agent.yaml');
  await writeYaml(yaml, cfg);
  const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml], { env: o.env });
  await daemon.waitForLog((l) => l.msg === 'daemon started');
  return { env, daemon, yaml, cfg, proxy, server: env.server };
}

async function finish(r: DaemonRun): Promise<void> {
  await r.daemon.stop(2000).catch(() => undefined);
  await r.proxy?.close();
  await r.server.stop();
}

const tail = (p: LoggedProcess): string => p.output().slice(-40).join('\n');
const withMsg = (p: LoggedProcess, msg: string, backup?: string): LogLine[] =>
  p.logs().filter((l) => l.msg === msg && (backup === undefined || l.backup === backup));
const commits = (p: LoggedProcess, backup = 'app'): number => withMsg(p, 'backup committed', backup).length;

/** Waits until `backup` has committed more than `already` times. */
function nextCommit(p: LoggedProcess, already: number, timeoutMs = 15_000, backup = 'app'): Promise<void> {
  return waitUntil(() => commits(p, backup) > already, timeoutMs, `commit number ${already + 1} of ${backup}`, () => tail(p));
}

/** The daemon exits 0, having printed no stack trace. */
async function assertCleanExit(p: LoggedProcess, timeoutMs: number): Promise<void> {
  assert.deepEqual(await p.waitForExit(timeoutMs), { code: 0, signal: null });
  const traces = p.output().filter((l) => /^(out|err)\| +at .+:\d+:\d+\)?$/.test(l));
  assert.deepEqual(traces, [], `no stack trace\n${tail(p)}`);
}

/** The agent's log lines are written at its (possibly faked) time: `time` is what its clock said. */
const timeOf = (l: LogLine): number => Number(l.time);

describe('agent daemon under faults', { timeout: 240_000 }, () => {
  it('SIGHUP while the daemon is still starting: it is not killed, it reloads once started; --once still ends on SIGHUP', async () => {
    const env = await startEnv(tmp, pki, 'nbk-dfaults-early-hup-');
    try {
      const cfg = agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'app', storage: 'main', sources: [small] }]);
      Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: YEARLY });
      const text = stringify(cfg);
      // The configuration comes through a FIFO, so the test holds the agent inside its start-up.
      const fifo = join(env.dir, 'agent.yaml');
      execFileSync('mkfifo', [fifo]);
      const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', fifo]);
      let fd = await writerOnceRead(fifo, daemon);
      // Before the fix SIGHUP had no handler until the configuration was read: the daemon died of it.
      daemon.proc.kill('SIGHUP');
      writeAndClose(fd, text);
      await daemon.waitForLog((l) => l.msg === 'daemon started', 15_000);
      await daemon.waitForLog((l) => l.msg === 'SIGHUP received while starting: reloading the configuration', 10_000);
      // The reload reads the configuration again, through the same FIFO.
      fd = await writerOnceRead(fifo, daemon);
      writeAndClose(fd, text);
      await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 10_000);
      assert.equal(withMsg(daemon, 'configuration reloaded').length, 1, tail(daemon));
      daemon.proc.kill('SIGTERM');
      await assertCleanExit(daemon, 10_000);

      // Any other command keeps SIGHUP's default action (a terminal that hangs up ends it).
      const once = spawnLogged(process.execPath, [AGENT_BIN, '--config', fifo, '--once']);
      fd = await writerOnceRead(fifo, once);
      once.proc.kill('SIGHUP');
      try {
        assert.deepEqual(await once.waitForExit(10_000), { code: null, signal: 'SIGHUP' }, tail(once));
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      await env.server.stop();
    }
  });

  it('SIGHUP right before SIGTERM: the reload is not applied and the daemon exits 0 at once', async () => {
    const r = await startDaemon('hupterm', small, { entry: { schedule: YEARLY }, top: { daemon: CONTROL_ON } });
    try {
      await r.daemon.waitForLog((l) => l.msg === 'control channel up');
      r.daemon.proc.kill('SIGHUP');
      r.daemon.proc.kill('SIGTERM');
      // Before the fix the reload, finishing after the stop, started a new control channel that
      // kept the process alive for ever.
      await assertCleanExit(r.daemon, 10_000);
      assert.ok(withMsg(r.daemon, 'stopped').length === 1, tail(r.daemon));
      assert.equal(withMsg(r.daemon, 'configuration reloaded').length, 0, 'nothing reloaded on the way out');
    } finally {
      await finish(r);
    }
  });

  it('SIGTERM while connecting to a server that accepts but never answers: exit 0 at once, not after connect_timeout', async () => {
    const stall = Array.from({ length: 20 }, () => ({ stallAfterBytes: 0 }));
    const r = await startDaemon('hung', small, {
      plan: stall,
      top: { daemon: CONTROL_ON, retry: { max_attempts: 3, initial_delay: '1s', connect_timeout: '30s', read_timeout: '15s' } },
    });
    try {
      // The control channel's connection and the first scheduled backup's, both stuck in TLS.
      await r.proxy!.waitForConnections(2, 10_000);
      const t0 = Date.now();
      r.daemon.proc.kill('SIGTERM');
      await assertCleanExit(r.daemon, 20_000);
      const took = Date.now() - t0;
      assert.ok(took < 5000, `exited ${took} ms after SIGTERM (connect_timeout is 30 s)\n${tail(r.daemon)}`);
      const failed = withMsg(r.daemon, 'backup failed', 'app');
      assert.equal(failed.length, 1, tail(r.daemon));
      assert.match(String(failed[0].err), /the daemon is stopping \(SIGTERM\): a backup still connecting or waiting to retry is given up/);
    } finally {
      await finish(r);
    }
  });

  it('the clock set back an hour, then forward again: backups go on every 2 s of the new time, one per time, no burst', async () => {
    const clock = join(work, 'clock');
    fs.writeFileSync(clock, '+0\n');
    const r = await startDaemon('clock', small, { pki: oldPki, env: faketimeFileEnv(clock) });
    try {
      await nextCommit(r.daemon, 0);
      const stepBack = Date.now();
      fs.writeFileSync(clock, '-1h\n');
      // Before the fix the next time stayed an hour ahead on the new clock: nothing ran for an hour.
      const onClockBack = (): LogLine[] => withMsg(r.daemon, 'backup committed', 'app').filter((l) => timeOf(l) < stepBack - 3000_000);
      await waitUntil(() => onClockBack().length >= 3, 15_000, 'three commits on the clock an hour back', () => tail(r.daemon));
      const back = withMsg(r.daemon, 'the clock was set back; backup rescheduled', 'app');
      assert.equal(back.length, 1, `the step is logged once\n${tail(r.daemon)}`);
      assert.ok(Date.parse(String(back[0].was)) - Date.parse(String(back[0].next)) > 3500_000, JSON.stringify(back[0]));

      // Forward over 1800 schedule times: each of the next backups waits for its own time.
      const stepForward = Date.now();
      fs.writeFileSync(clock, '+0\n');
      await waitUntil(
        () => withMsg(r.daemon, 'backup committed', 'app').filter((l) => timeOf(l) >= stepForward).length >= 3,
        15_000,
        'three commits after the clock went forward',
        () => tail(r.daemon),
      );
      const startedAfter = withMsg(r.daemon, 'backup started', 'app')
        .filter((l) => timeOf(l) >= stepForward)
        .map(timeOf);
      for (let i = 1; i < startedAfter.length; i++) {
        assert.ok(startedAfter[i] - startedAfter[i - 1] > 1000, `backups started ${startedAfter.map((t) => t - stepForward).join(', ')} ms after the step: a burst`);
      }
      const laterNext = withMsg(r.daemon, 'backup scheduled', 'app').filter((l) => timeOf(l) >= stepForward);
      for (const l of laterNext) assert.ok(Date.parse(String(l.next)) > timeOf(l), `scheduled in the past: ${JSON.stringify(l)}`);
      r.daemon.proc.kill('SIGTERM');
      await assertCleanExit(r.daemon, 15_000);
    } finally {
      await finish(r);
    }
  });

  it('the clock set back while a link is dead: the dead link is still found within read_timeout, and the backup resumes', async () => {
    const clock = join(work, 'clock-link');
    fs.writeFileSync(clock, '+0\n');
    // The first connection goes silent after 1 MiB; the next ones forward.
    const r = await startDaemon('deadlink', big, {
      pki: oldPki,
      env: faketimeFileEnv(clock),
      plan: [{ stallAfterBytes: MiB }],
      top: { retry: { max_attempts: 5, initial_delay: '500ms', connect_timeout: '5s', read_timeout: '3s' } },
    });
    try {
      const started = await r.daemon.waitForLog((l) => l.msg === 'backup started', 15_000);
      await r.proxy!.waitFor((p) => p.conns[0]?.state === 'stalled', 10_000, 'the first connection stalled');
      fs.writeFileSync(clock, '-1h\n');
      // Before the fix the watchdog measured silence on the wall clock: an hour back, it would
      // have noticed the dead link an hour later.
      const lost = await r.daemon.waitForLog((l) => l.msg === 'connection lost; resuming', 15_000);
      assert.match(String(lost.err), /no acknowledgement from the server for 3s/);
      const committed = await r.daemon.waitForLog((l) => l.msg === 'backup committed', 30_000);
      assert.equal(committed.session, started.session, 'resumed, not started over');
    } finally {
      await finish(r);
    }
  });

  it('a configuration made invalid in six ways: one line each naming the key or file, the schedule goes on, a valid reload then applies', async () => {
    const r = await startDaemon('badhup', small);
    try {
      await nextCommit(r.daemon, 0);
      const tls = r.cfg.tls as Record<string, string>;
      const entry = (r.cfg.backups as Record<string, unknown>[])[0];
      const keyDir = join(r.env.dir, 'key-is-a-folder');
      fs.mkdirSync(keyDir);
      const variants: { why: string; write: () => Promise<void>; expect: RegExp }[] = [
        { why: 'not YAML', write: async () => fs.writeFileSync(r.yaml, 'agent: { name: agent-a\n  bad'), expect: /agent\.yaml: invalid YAML at line 2/ },
        { why: 'an unknown key', write: () => writeYaml(r.yaml, { ...r.cfg, bogus: 1 }), expect: /agent\.yaml: bogus: unknown key/ },
        {
          why: 'an impossible value',
          write: () => writeYaml(r.yaml, { ...r.cfg, backups: [{ ...entry, resume: { chunk_size: '1kb' } }] }),
          expect: /agent\.yaml: backups\[0\]\.resume\.chunk_size/,
        },
        { why: 'a missing certificate', write: () => writeYaml(r.yaml, { ...r.cfg, tls: { ...tls, client_cert: join(r.env.dir, 'gone.pem') } }), expect: /cannot read certificate .*gone\.pem/ },
        { why: 'a key that cannot be read', write: () => writeYaml(r.yaml, { ...r.cfg, tls: { ...tls, client_key: keyDir } }), expect: /key-is-a-folder: EISDIR/ },
        { why: 'the file itself gone', write: async () => fs.rmSync(r.yaml), expect: /agent\.yaml: config file not found/ },
      ];
      for (const [i, v] of variants.entries()) {
        await v.write();
        r.daemon.proc.kill('SIGHUP');
        await waitUntil(() => withMsg(r.daemon, 'reload failed; keeping the previous configuration').length > i, 10_000, `the refusal of ${v.why}`, () => tail(r.daemon));
        const lines = withMsg(r.daemon, 'reload failed; keeping the previous configuration');
        assert.equal(lines.length, i + 1, `one line for ${v.why}`);
        assert.match(String(lines[i].err), v.expect, v.why);
      }
      // The old configuration still runs.
      await nextCommit(r.daemon, commits(r.daemon));
      assert.equal(withMsg(r.daemon, 'configuration reloaded').length, 0);
      // A valid file again, with a second entry: applied at the next SIGHUP.
      const cfg = { ...r.cfg, backups: [entry, { ...entry, name: 'etc' }] };
      await writeYaml(r.yaml, cfg);
      r.daemon.proc.kill('SIGHUP');
      const reloaded = await r.daemon.waitForLog((l) => l.msg === 'configuration reloaded');
      assert.deepEqual(reloaded.backups, ['app', 'etc']);
      await nextCommit(r.daemon, 0, 15_000, 'etc');
      r.daemon.proc.kill('SIGTERM');
      await assertCleanExit(r.daemon, 15_000);
    } finally {
      await finish(r);
    }
  });

  it('SIGHUP removing an entry whose backup is running: it finishes and commits, its overlapping times are skipped, the new entry runs after it', async () => {
    const r = await startDaemon('hupbusy', big, { throttle: MiB, top: { daemon: { shutdown_grace: '60s', control_channel: { enabled: false } } } });
    try {
      const started = await r.daemon.waitForLog((l) => l.msg === 'backup started', 15_000);
      // A 2 s schedule and a 6 s backup: the next time comes while it runs.
      const skipped = await r.daemon.waitForLog((l) => l.msg === 'previous run still in progress; this run is skipped', 10_000);
      assert.equal(skipped.backup, 'app');
      const entry = (r.cfg.backups as Record<string, unknown>[])[0];
      await writeYaml(r.yaml, { ...r.cfg, backups: [{ ...entry, name: 'app2', sources: [{ path: small }] }] });
      r.daemon.proc.kill('SIGHUP');
      const reloaded = await r.daemon.waitForLog((l) => l.msg === 'configuration reloaded');
      assert.equal(commits(r.daemon), 0, 'the reload came while app was running');
      await nextCommit(r.daemon, 0, 30_000, 'app2');
      const appCommit = withMsg(r.daemon, 'backup committed', 'app');
      assert.equal(appCommit.length, 1, `the running backup finished\n${tail(r.daemon)}`);
      assert.equal(appCommit[0].session, started.session);
      const startsAfterReload = withMsg(r.daemon, 'backup started').filter((l) => timeOf(l) >= timeOf(reloaded));
      assert.ok(startsAfterReload.every((l) => l.backup === 'app2'), 'app never started again');
      // One backup at a time: each start comes after the previous run's end.
      const seq = r.daemon.logs().filter((l) => l.msg === 'backup started' || l.msg === 'backup committed' || l.msg === 'backup failed');
      for (let i = 1; i < seq.length; i++) {
        assert.ok(!(seq[i].msg === 'backup started' && seq[i - 1].msg === 'backup started'), `two backups at once: ${JSON.stringify(seq)}`);
      }
      assert.equal((await committedBackups(join(r.env.store, 'agent-a', 'app'))).length, 1);
    } finally {
      await finish(r);
    }
  });

  it('the server down at the scheduled time: that run fails with one line naming the server, and the next one commits once it is back', async () => {
    const r = await startDaemon('down', small, {
      top: { daemon: CONTROL_ON, retry: { max_attempts: 2, initial_delay: '500ms', connect_timeout: '2s', read_timeout: '15s' } },
    });
    try {
      await nextCommit(r.daemon, 0);
      const port = r.server.port;
      await r.server.stop();
      const refused = new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}`);
      await r.daemon.waitForLog((l) => l.msg === 'backup failed' && refused.test(String(l.err)), 15_000);
      await writeServerConfig(join(r.env.dir, 'server.yaml'), pki, { main: { base_dir: r.env.store, max_backups: 3 } }, { listen: `127.0.0.1:${port}` });
      r.server = await startServer(join(r.env.dir, 'server.yaml'));
      await nextCommit(r.daemon, commits(r.daemon));
      assert.equal(r.daemon.proc.exitCode, null, 'the daemon runs on');
    } finally {
      await finish(r);
    }
  });

  it('the server killed in the middle of a daemon backup and restarted: the backup resumes and commits', async () => {
    const r = await startDaemon('restart', big, {
      throttle: MiB,
      top: { daemon: CONTROL_ON, retry: { max_attempts: 10, initial_delay: '500ms', max_delay: '2s', connect_timeout: '5s', read_timeout: '15s' } },
    });
    try {
      const started = await r.daemon.waitForLog((l) => l.msg === 'backup started', 15_000);
      await waitForTempBytes(join(r.env.store, 'agent-a', 'app'), String(started.session), 2 * MiB, 15_000);
      const port = r.server.port;
      r.server.proc.kill('SIGKILL');
      await r.server.waitForExit(5000);
      await writeServerConfig(join(r.env.dir, 'server.yaml'), pki, { main: { base_dir: r.env.store, max_backups: 3 } }, { listen: `127.0.0.1:${port}` });
      r.server = await startServer(join(r.env.dir, 'server.yaml'));
      await r.daemon.waitForLog((l) => l.msg === 'session resumed' && l.session === started.session, 20_000);
      const committed = await r.daemon.waitForLog((l) => l.msg === 'backup committed', 30_000);
      assert.equal(committed.session, started.session, 'the same session, not a new one');
      assert.equal(withMsg(r.daemon, 'starting a new session from the beginning').length, 0);
      assert.equal((await committedBackups(join(r.env.store, 'agent-a', 'app'))).length, 1);
      r.daemon.proc.kill('SIGTERM');
      await assertCleanExit(r.daemon, 30_000);
      assert.deepEqual(await tmpFiles(r.env.store), []);
    } finally {
      await finish(r);
    }
  });
});

/**
 * The agent daemon's control channel across a SIGHUP, against a real server over mTLS:
 *   - the same configuration reloaded in the middle of a parallel backup keeps the channel (one
 *     connection on both sides), and a stream rotation asked after it (SIGUSR2 to the server) is
 *     drained by the backup before it is acknowledged; the backup commits and restores exactly;
 *   - a reload that changes the channel's settings while a backup waits for admission reconnects
 *     the channel, and the admission the server sends on the new connection starts that backup at
 *     once (not after the minute the server's CDFE allows).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AckStatus } from '../../protocol/constants.js';
import { encodeSingleMode } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, spawnLogged, writeYaml, type LoggedProcess, type LogLine } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';
import { rawAgent, rawHandshake } from './raw-client.js';
import { agentConfigObject, committedBackups, makeSource, makeWorkspace, restoreAndCompare, startEnv } from './harness.js';

const MiB = 1024 * 1024;
const EVERY_2S = '*/2 * * * * *';
const CONTROL = { control_channel: { enabled: true, keepalive_interval: '1s', reconnect_delay: '200ms', max_reconnect_delay: '1s' } };

const tmp = new TempDirs();
let pki: Pki;
let work: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-ctrlhup-', ['agent-a', 'agent-b']));
});
after(() => tmp.cleanup());

const tail = (p: LoggedProcess): string => p.output().slice(-40).join('\n');
const withMsg = (p: LoggedProcess, msg: string, pred: (l: LogLine) => boolean = () => true): LogLine[] =>
  p.logs().filter((l) => l.msg === msg && pred(l));

/** The daemon exits 0 on SIGTERM (a backup that a 2 s tick started meanwhile is waited for). */
async function stopClean(daemon: LoggedProcess): Promise<void> {
  daemon.proc.kill('SIGTERM');
  assert.deepEqual(await daemon.waitForExit(30_000), { code: 0, signal: null }, tail(daemon));
}

describe('control channel across a daemon reload', { timeout: 120_000 }, () => {
  it('SIGHUP with the same configuration during a parallel backup keeps the channel; a rotation after it drains, and the backup commits exactly', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrlhup-rot-');
    const src = join(work, 'rot-src');
    const tree = await makeSource(src, { files: 6, size: 2 * MiB, seed: 41 });
    // 1 MiB/s per connection, two streams: about 6 s of backup to reload and rotate in.
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 40 }, () => ({ throttleBytesPerSec: MiB })) });
    const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
    Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: EVERY_2S, parallels: 2, auto_scaler: { enabled: false } });
    Object.assign(cfg, { daemon: CONTROL, resume: { buffer_size: '2mb', chunk_size: '256kb' } });
    const yaml = join(env.dir, 'agent.yaml');
    await writeYaml(yaml, cfg);
    const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml]);
    const server = env.server;
    try {
      await daemon.waitForLog((l) => l.msg === 'control channel up', 10_000);
      await server.waitForLog((l) => l.msg === 'stream joined' && l.stream === 1, 20_000);
      daemon.proc.kill('SIGHUP');
      await daemon.waitForLog((l) => l.msg === 'configuration reloaded');
      assert.equal(withMsg(daemon, 'backup committed').length, 0, 'the reload came while the backup ran');
      // Before the fix the channel was being replaced: a first ask could find no channel, and is
      // asked again once the new one is open (at most 5 asks).
      const requested = (): LogLine[] => withMsg(server, 'stream rotation requested (SIGUSR2)');
      for (let asks = 1; ; asks++) {
        server.proc.kill('SIGUSR2');
        await waitUntil(() => requested().length >= asks, 5000, 'the server took SIGUSR2', () => tail(server));
        if (Number(requested()[asks - 1].sessions) > 0) break;
        assert.ok(asks < 5, `no session to rotate after ${asks} asks\n${tail(server)}`);
        const opened = withMsg(server, 'control channel opened').length;
        await waitUntil(() => withMsg(server, 'control channel opened').length > opened, 5000, 'a control channel opened', () => tail(server)).catch(() => undefined);
      }
      await server.waitForLog((l) => l.msg === 'rotation acknowledged', 20_000);
      const committed = await daemon.waitForLog((l) => l.msg === 'backup committed', 30_000);
      await stopClean(daemon);

      // Before the fix the rotation was acknowledged by a new channel nobody listened on: no drain.
      assert.equal(withMsg(daemon, 'stream rotated; re-joining').length, 1, `the stream was drained and re-joined\n${tail(daemon)}`);
      assert.equal(withMsg(daemon, 'control channel up').length, 1, `one control connection for the daemon's whole life\n${tail(daemon)}`);
      assert.equal(withMsg(server, 'control channel opened', (l) => l.agent === 'agent-a').length, 1, tail(server));
      assert.deepEqual(withMsg(server, 'control channel closed', (l) => (l.reason as string | undefined)?.includes('replaced') ?? false), []);
      assert.equal(withMsg(daemon, 'control channel settings changed; reconnecting').length, 0);

      const archives = await committedBackups(join(env.store, 'agent-a', 'app'));
      const archive = join(env.store, 'agent-a', 'app', archives[0]);
      const assembled = withMsg(server, 'parallel session assembled', (l) => l.session === committed.session)[0];
      assert.ok(assembled, tail(server));
      assert.equal(assembled.duplicates, 0, 'no chunk arrived twice');
      assert.equal(assembled.streamBytes, fs.statSync(archive).size + 8 * (assembled.chunks as number));
      await restoreAndCompare(archive, tree, await tmp.make('nbk-ctrlhup-restore-'));
    } finally {
      await daemon.stop(2000).catch(() => undefined);
      await proxy.close();
      await server.stop();
    }
  });

  it('SIGHUP changing the channel settings while a backup waits for admission: the channel reconnects and the admission on it is heard', async () => {
    const env = await startEnv(tmp, pki, 'nbk-ctrlhup-adm-', { server: { max_concurrent_sessions: 1 } });
    const server = env.server;
    // agent-b holds the only slot (a session a few bytes into its body) until the test lets go.
    const blocker = rawAgent(server.port, pki, 'agent-b');
    const go = await rawHandshake(blocker, { agent: 'agent-b' });
    assert.equal(go.status, AckStatus.GO, go.message);
    blocker.write(encodeSingleMode());
    blocker.write(Buffer.alloc(100));
    const src = join(work, 'adm-src');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(join(src, 'a.txt'), 'hello\n');
    const cfg = agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [src] }]);
    Object.assign((cfg.backups as Record<string, unknown>[])[0], { schedule: EVERY_2S });
    Object.assign(cfg, { daemon: CONTROL });
    const yaml = join(env.dir, 'agent.yaml');
    await writeYaml(yaml, cfg);
    const daemon = spawnLogged(process.execPath, [AGENT_BIN, '--config', yaml]);
    try {
      await daemon.waitForLog((l) => l.msg === 'server at capacity; waiting for admission' && l.waitingFor === 'admission on the control channel', 20_000);
      await daemon.waitForLog((l) => l.msg === 'the server asks to wait before starting a backup');
      await writeYaml(yaml, { ...cfg, daemon: { control_channel: { ...CONTROL.control_channel, keepalive_interval: '2s' } } });
      daemon.proc.kill('SIGHUP');
      await daemon.waitForLog((l) => l.msg === 'configuration reloaded');
      // A second connection up, as the server sees it, before the slot frees.
      await waitUntil(() => withMsg(daemon, 'control channel up').length >= 2, 10_000, 'the control channel up again', () => tail(daemon));
      await waitUntil(() => withMsg(server, 'control channel opened', (l) => l.agent === 'agent-a' && l.keepaliveS === 2).length === 1, 10_000, 'the new channel on the server', () => tail(server));
      const released = Date.now();
      blocker.destroy();
      await server.waitForLog((l) => l.msg === 'admission: admitted' && l.agent === 'agent-a', 10_000);
      // Before the fix the backup listened on the stopped channel: it started after CDFE's minute.
      const admitted = await daemon.waitForLog((l) => l.msg === 'admitted after waiting', 15_000);
      assert.ok(Date.now() - released < 15_000, `admitted ${Date.now() - released} ms after the slot freed`);
      assert.ok(Number(admitted.waits) >= 1);
      await daemon.waitForLog((l) => l.msg === 'backup committed', 15_000);
      assert.equal(withMsg(daemon, 'control channel settings changed; reconnecting').length, 1, tail(daemon));
      assert.equal((await committedBackups(join(env.store, 'agent-a', 'app'))).length >= 1, true);
      await stopClean(daemon);
    } finally {
      blocker.destroy();
      await daemon.stop(2000).catch(() => undefined);
      await server.stop();
    }
  });
});

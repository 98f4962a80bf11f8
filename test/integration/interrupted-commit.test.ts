/**
 * A commit that is interrupted must not make a second archive. strace slows every fsync of the
 * server down, so that each step of a commit lasts long enough to act on: a resume arrives while the
 * commit is under way, or the server is killed (SIGKILL) once the archive is linked, or once the
 * temporary name is gone. Each time the agent's resume must hear COMMITTED, and the store must hold
 * one archive, with its `.sha256`, and no session file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AbortStatus, ResumeStatus } from '../../protocol/constants.js';
import { decodeAbortAck, decodeResumeAck, encodeResume, encodeSessionAbort, encodeSingleMode } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { randomBytesSeeded, type TreeInfo } from '../helpers/tree.js';
import { waitUntilAsync } from '../helpers/wait.js';
import { logsWith, makeSource, makeWorkspace, restoreTheBackup, showRun, tmpFiles, writeAppAgentYaml, writeServerConfig, type Env } from './harness.js';
import { rawAgent, rawHandshake, trailerFor } from './raw-client.js';

const STRACE = ['/usr/bin/strace', '/bin/strace'].find((p) => fs.existsSync(p));
const tmp = new TempDirs();
let pki: Pki;
let work: string;
let tree: TreeInfo;

before(async () => {
  assert.ok(STRACE, 'strace is required (apt-get install strace: the README lists it)');
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-intcommit-', ['agent-a']));
  tree = await makeSource(join(work, 'src'), { files: 2, size: 1024 * 1024, seed: 310 });
});
after(() => tmp.cleanup());

/** A fresh store and server.yaml; the server is started under `strace …` (its own pid is in its log lines). */
async function tracedEnv(name: string, straceArgs: string[]): Promise<Env & { yaml: string }> {
  const dir = await tmp.make(`nbk-intcommit-${name}-`);
  const store = join(dir, 'store');
  const yaml = join(dir, 'server.yaml');
  await writeServerConfig(yaml, pki, { main: { base_dir: store, max_backups: 3 } });
  const server = await startServer(yaml, { wrapper: [STRACE!, '-f', '-qq', '-o', '/dev/null', ...straceArgs, '--'] });
  return { dir, store, server, yaml };
}

/** The server's own pid (the handle's process is strace). */
function serverPid(server: ServerHandle): number {
  const pid = server.logs().find((l) => typeof l.pid === 'number')?.pid;
  assert.ok(typeof pid === 'number', 'the server logged its pid');
  return pid;
}

/** Stops a server started under strace and the server itself (strace leaves its tracee running). */
async function stopTraced(server: ServerHandle): Promise<void> {
  const pid = serverPid(server);
  await server.stop();
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
}

test('an abort that overtakes the session\'s set-up waits for it, and discards the session (fsync slowed by strace)', async () => {
  const env = await tracedEnv('abort', ['-e', 'trace=fsync', '-e', 'inject=fsync:delay_enter=1500000']);
  try {
    const c = rawAgent(env.server.port, pki);
    const ack = await rawHandshake(c, { agent: 'agent-a' });
    c.write(encodeSingleMode());
    // The session's record is being written (its fsync takes 1.5 s): GO was sent, the session is
    // not registered yet. An agent told to stop twice sends its abort right now.
    const dir = join(env.store, 'agent-a', 'app');
    await waitUntilAsync(async () => (await tmpFiles(dir)).some((f) => f.includes(ack.sessionId) && f.endsWith('.session.new.tmp')), 10_000, 'the session record to be written', async () => (await tmpFiles(dir)).join(', '));
    const a = rawAgent(env.server.port, pki);
    await a.connected();
    a.write(encodeSessionAbort({ sessionId: ack.sessionId, reason: 'told to stop twice' }));
    const answer = await a.read(decodeAbortAck, 10_000, 'abort answer');
    assert.equal(answer.status, AbortStatus.DISCARDED, `abort answered ${answer.status} (1 = NOT_FOUND: it did not wait for the set-up)`);
    await env.server.waitForLog((l) => l.msg === 'session discarded' && l.session === ack.sessionId && /aborted by the agent/.test(String(l.reason)), 10_000);
    await waitUntilAsync(async () => (await tmpFiles(dir)).length === 0, 10_000, 'the session files to be removed', async () => (await tmpFiles(dir)).join(', '));
    c.destroy();
    a.destroy();
  } finally {
    await stopTraced(env.server);
  }
});

test('a resume that arrives while the commit runs hears COMMITTED (fsync slowed by strace)', async () => {
  const env = await tracedEnv('slow', ['-e', 'trace=fsync', '-e', 'inject=fsync:delay_enter=1500000']);
  try {
    const body = randomBytesSeeded(300_000, 41);
    const c = rawAgent(env.server.port, pki);
    const ack = await rawHandshake(c, { agent: 'agent-a' });
    c.write(encodeSingleMode());
    c.write(body);
    c.write(trailerFor(body));
    c.socket.end();
    // The commit has begun once the trailer is cut off the temporary file; its fsyncs take seconds.
    const dir = join(env.store, 'agent-a', 'app');
    await waitUntilAsync(
      async () => {
        const temp = (await tmpFiles(dir)).find((f) => f.includes(ack.sessionId) && f.endsWith('.tar.gz.tmp'));
        return temp !== undefined && fs.statSync(join(dir, temp)).size === body.length;
      },
      20_000,
      'the commit to cut the trailer off',
    );
    c.destroy(); // as if the agent gave up waiting for its Final ACK
    const r = rawAgent(env.server.port, pki);
    await r.connected();
    r.write(encodeResume({ version: 5, sessionId: ack.sessionId, agent: 'agent-a', storage: 'main' }));
    const answer = await r.read(decodeResumeAck, 30_000, 'resume answer');
    r.destroy();
    assert.equal(answer.status, ResumeStatus.COMMITTED, `resume answer ${JSON.stringify(answer)}\n${env.server.output().slice(-20).join('\n')}`);
    assert.equal(answer.lastOffset, body.length);
    assert.ok(answer.sha256?.equals(createHash('sha256').update(body).digest()), 'the SHA-256 of what was committed');
    const archives = fs.readdirSync(dir).filter((n) => /\.tar\.gz$/.test(n));
    assert.equal(archives.length, 1, `one archive: ${archives.join(', ')}`);
  } finally {
    await stopTraced(env.server);
  }
});

for (const { window, reached } of [
  { window: 'after the link (the temporary file has two names)', reached: (names: string[]) => names.some(isArchive) && names.some(isTemp) },
  { window: 'after the temporary name was removed', reached: (names: string[]) => names.some(isArchive) && !names.some(isTemp) && names.some(isRecord) },
]) {
  test(`a server killed ${window} finishes the commit at its restart; the agent hears COMMITTED, one archive`, async () => {
    // Every fsync of the commit takes a second: the test sees each step on disk and kills the server there.
    const env = await tracedEnv('kill', ['-e', 'trace=fsync', '-e', 'inject=fsync:delay_enter=1000000']);
    let server = env.server;
    try {
      const yaml = await writeAppAgentYaml(env.dir, pki, server.port, tree, {
        retry: { max_attempts: 10, initial_delay: '500ms', max_delay: '2s', connect_timeout: '5s', read_timeout: '30s' },
      });
      const agent = runAgent(['--config', yaml, '--once'], { timeoutMs: 90_000 });
      const dir = join(env.store, 'agent-a', 'app');
      let names: string[] = [];
      await waitUntilAsync(
        async () => {
          names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
          return reached(names);
        },
        60_000,
        `the commit ${window}`,
        async () => names.join(', '),
      );
      process.kill(serverPid(server), 'SIGKILL');
      await server.waitForExit(10_000);
      const temp = names.find(isTemp);
      if (temp) assert.equal(fs.statSync(join(dir, temp)).nlink, 2, 'the temporary file is the archive too');

      // The next server, on the same address.
      await writeServerConfig(env.yaml, pki, { main: { base_dir: env.store, max_backups: 3 } }, { listen: `127.0.0.1:${env.server.port}` });
      server = await startServer(env.yaml);
      await server.waitForLog((l) => l.msg === 'a commit the previous server had begun is finished; a resume of the session hears COMMITTED', 5000);
      const run = await agent;
      assert.equal(run.code, 0, `${showRun(run)}\n--- server after the restart ---\n${server.output().slice(-20).join('\n')}`);
      assert.equal(logsWith(run.logs, 'session was already committed (its Final ACK was lost)').length, 1, showRun(run));
      assert.equal(logsWith(run.logs, 'starting a new session from the beginning').length, 0, 'never from zero');
      await restoreTheBackup({ ...env, server }, tree);
      const archive = fs.readdirSync(dir).find(isArchive)!;
      const sha = fs.readFileSync(join(dir, `${archive}.sha256`), 'utf8');
      assert.equal(sha.split(' ')[0], createHash('sha256').update(fs.readFileSync(join(dir, archive))).digest('hex'));
    } finally {
      await stopTraced(env.server);
      await server.stop();
    }
  });
}

const isArchive = (n: string): boolean => /^\d{4}-.*\.tar\.gz$/.test(n);
const isTemp = (n: string): boolean => n.endsWith('.tar.gz.tmp');
const isRecord = (n: string): boolean => n.endsWith('.session.tmp');

/**
 * A server whose clock is set back (a real clock offset for the server process, with faketime)
 * must never delete the backup it has just committed: the new archive is named just after the
 * newest one, rotation removes an older one, and the server says its clock is behind.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { faketimeEnv } from '../helpers/faketime.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { gnuTarExtract } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, showRun, startEnv, type Env } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let env: Env;
let server: ServerHandle | null = null;
const DAY_MS = 24 * 3600 * 1000;

before(async () => {
  work = await tmp.make('nbk-clock-');
  // Certificates valid from before the server's shifted clock, so its TLS accepts them.
  pki = await makePki(join(work, 'pki'), { agents: ['agent-a'], backdateDays: 500 });
  env = await startEnv(tmp, pki, 'nbk-clock-env-', { storage: { max_backups: 2 } });
  server = env.server;
});

after(async () => {
  await server?.stop();
  await tmp.cleanup();
});

const source = (): string => join(work, 'src');

/** Backs up the source with `generation` in it; the agent must report success. */
async function backup(generation: number, port: number): Promise<void> {
  fs.mkdirSync(source(), { recursive: true });
  fs.writeFileSync(join(source(), 'generation.txt'), `${generation}\n`);
  const yaml = join(work, 'agent.yaml');
  await writeYaml(yaml, agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [source()] }]));
  const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
  assert.equal(run.code, 0, showRun(run));
}

test('with the server clock 400 days behind, the new backup is kept, named last, and the clock step is logged', async () => {
  await backup(1, env.server.port);
  await backup(2, env.server.port);
  const backupDir = join(env.store, 'agent-a', 'app');
  const before = await committedBackups(backupDir);
  assert.equal(before.length, 2);

  await env.server.stop();
  server = await startServer(join(env.dir, 'server.yaml'), { env: faketimeEnv('-400d') });
  const listening = server.logs().find((l) => l.msg === 'listening');
  const lag = Date.now() - Number(listening?.time);
  assert.ok(lag > 399 * DAY_MS && lag < 401 * DAY_MS, `the server's clock is ${(lag / DAY_MS).toFixed(1)} days behind`);

  await backup(3, server.port);
  const after = await committedBackups(backupDir);
  assert.equal(after.length, 2, `max_backups 2: ${after.join(', ')}`);
  assert.equal(after[0], before[1], 'rotation removed the oldest archive');
  assert.ok(after[1] > before[1], `the new archive (${after[1]}) sorts after the newest before it (${before[1]})`);
  const out = join(work, 'restore');
  await gnuTarExtract(join(backupDir, after[1]), out);
  assert.equal(fs.readFileSync(join(out, source(), 'generation.txt'), 'utf8'), '3\n', 'the newest archive is the backup just made');
  const warning = await server.waitForLog((l) => /clock is behind the newest archive/.test(String(l.msg)), 5000);
  assert.ok(Number(warning.behindS) > 399 * 24 * 3600);
});

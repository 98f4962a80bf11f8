/**
 * Unusable storages: a base_dir that is a file keeps the server from starting, with a line naming
 * the storage and the path; a storage that breaks while the server runs gets the agent a handshake
 * answer saying so, at once, while the server serves on.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { HealthStatus } from '../../protocol/constants.js';
import type { Pki } from '../helpers/pki.js';
import { SERVER_BIN, runAgent, writeYaml } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, makeWorkspace, showRun, startEnv, writeServerConfig, type Env } from './harness.js';
import { rawHealth } from './raw-client.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let env: Env | null = null;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-unusable-', ['agent-a']));
  fs.mkdirSync(join(work, 'src'));
  fs.writeFileSync(join(work, 'src', 'f.txt'), 'x\n');
});

after(async () => {
  await env?.server.stop();
  await tmp.cleanup();
});

test('a base_dir that is a file: the server refuses to start and names the storage and the path', async () => {
  const dir = await tmp.make('nbk-unusable-start-');
  const notADir = join(dir, 'store');
  fs.writeFileSync(notADir, 'a file, not a folder\n');
  await writeServerConfig(join(dir, 'server.yaml'), pki, { main: { base_dir: join(dir, 'ok') }, broken: { base_dir: notADir } });
  const r = await runAgent(['--config', join(dir, 'server.yaml')], { script: SERVER_BIN, timeoutMs: 20_000 });
  assert.equal(r.code, 1, showRun(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, showRun(r));
  assert.match(lines[0], new RegExp(`^nbackup-server: storage "broken": base_dir ${notADir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} cannot be used: .*not a directory`));
  assert.ok(!r.logs.some((l) => l.msg === 'listening'), 'it never listened');
});

test('a storage that breaks at run time: the agent is told at the handshake, the server serves on', async () => {
  env = await startEnv(tmp, pki, 'nbk-unusable-run-');
  const yaml = join(work, 'agent.yaml');
  await writeYaml(yaml, agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]));
  // The storage's folder is replaced by a file under the running server.
  fs.rmSync(env.store, { recursive: true, force: true });
  fs.writeFileSync(env.store, 'not a folder any more\n');
  const t0 = Date.now();
  const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
  assert.equal(r.code, 1, showRun(r));
  assert.ok(Date.now() - t0 < 10_000, 'at once, not after retries');
  assert.match(r.stderr, /server refused the backup: STORAGE_UNAVAILABLE \(storage "main" cannot be used: .*\)/, showRun(r));
  assert.equal((await rawHealth(env.server.port, pki)).status, HealthStatus.MAINTENANCE, 'health says the server cannot take backups');
  // Repaired, it works again without a restart.
  fs.rmSync(env.store);
  const again = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
  assert.equal(again.code, 0, showRun(again));
});

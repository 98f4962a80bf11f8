/**
 * CA bundles: a `ca_cert` holding several certificates (a CA being rotated) is trusted whole on
 * both sides. Here the server's certificate comes from one CA and the agent's from another, and
 * both sides trust the bundle of the two.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent, writeYaml } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, makeWorkspace, showRun, startEnv, writeServerConfig, type Env } from './harness.js';
import { startServer } from '../helpers/proc.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let env: Env;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-bundle-', ['agent-a']));
  fs.mkdirSync(join(work, 'src'));
  fs.writeFileSync(join(work, 'src', 'file.txt'), 'bundle\n');
});

after(async () => {
  await env?.server.stop();
  await tmp.cleanup();
});

test('server and agent certificates from two CAs of one bundle: the backup commits', async () => {
  // Each side's own certificate comes from the CA that is second in its bundle: all must count.
  const serverBundle = join(work, 'server-bundle.pem');
  const agentBundle = join(work, 'agent-bundle.pem');
  fs.writeFileSync(serverBundle, fs.readFileSync(pki.rogue.caCert, 'utf8') + fs.readFileSync(pki.caCert, 'utf8'));
  fs.writeFileSync(agentBundle, fs.readFileSync(pki.caCert, 'utf8') + fs.readFileSync(pki.rogue.caCert, 'utf8'));
  env = await startEnv(tmp, { ...pki, caCert: serverBundle }, 'nbk-bundle-env-');
  const cfg = agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]);
  cfg.tls = { ca_cert: agentBundle, client_cert: pki.rogue.cert, client_key: pki.rogue.key };
  const yaml = join(work, 'agent.yaml');
  await writeYaml(yaml, cfg);
  const run = await runAgent(['--config', yaml, '--once']);
  assert.equal(run.code, 0, showRun(run));
  assert.equal((await committedBackups(join(env.store, 'agent-a', 'app'))).length, 1);
});

test('without the second CA in its bundle, the server refuses that agent (the bundle is what let it in)', async () => {
  const dir = await tmp.make('nbk-bundle-single-');
  await writeServerConfig(join(dir, 'server.yaml'), pki, { main: { base_dir: join(dir, 'store') } });
  const server = await startServer(join(dir, 'server.yaml'));
  try {
    const cfg = agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]);
    const agentBundle = join(work, 'agent-bundle.pem');
    cfg.tls = { ca_cert: agentBundle, client_cert: pki.rogue.cert, client_key: pki.rogue.key };
    const yaml = join(work, 'agent-refused.yaml');
    await writeYaml(yaml, cfg);
    const run = await runAgent(['--config', yaml, '--once']);
    assert.notEqual(run.code, 0, showRun(run));
    assert.equal((await committedBackups(join(dir, 'store', 'agent-a', 'app'))).length, 0);
  } finally {
    await server.stop();
  }
});

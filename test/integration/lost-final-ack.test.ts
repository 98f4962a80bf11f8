/**
 * A lost Final ACK must not make a duplicate backup: a TLS-terminating proxy lets the trailer
 * through, lets the server commit, then swallows the Final ACK and resets the connection. The
 * agent resumes, the server answers that the session is committed (size and SHA-256), the agent
 * checks them and reports success: one --once, exactly one archive.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { startTlsProxy, tlsProxyMaterial } from '../helpers/tls-proxy.js';
import type { TreeInfo } from '../helpers/tree.js';
import { logsWith, makeSource, makeWorkspace, restoreTheBackup, showRun, startEnv, writeAppAgentYaml } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let tree: TreeInfo;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-lostack-', ['agent-a']));
  tree = await makeSource(join(work, 'src'), { files: 4, size: 2 * 1024 * 1024, seed: 900 });
});

after(() => tmp.cleanup());

for (const parallels of [0, 4]) {
  test(`${parallels === 0 ? 'single stream' : `${parallels} streams`}: the Final ACK is lost, the backup still succeeds, once`, async () => {
    const env = await startEnv(tmp, pki, `nbk-lostack-p${parallels}-`);
    const proxy = await startTlsProxy({
      target: { host: '127.0.0.1', port: env.server.port },
      tls: tlsProxyMaterial(pki, 'agent-a'),
      plan: [{ swallowFinalAck: true }],
    });
    try {
      const yaml = await writeAppAgentYaml(work, pki, proxy.port, tree, { retry: { max_attempts: 4, initial_delay: '200ms', connect_timeout: '5s', read_timeout: '15s' } }, {
        parallels,
        auto_scaler: { enabled: false },
      });
      const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, showRun(run));
      const primary = proxy.conns[0];
      assert.equal(primary.kind, 'NBKP');
      assert.equal(primary.state, 'reset');
      assert.ok(primary.swallowed && primary.swallowed.length > 0, 'the Final ACK really was swallowed');
      assert.equal(primary.swallowed[0], 0, 'and it said OK');
      assert.equal(logsWith(run.logs, 'session was already committed (its Final ACK was lost)').length, 1, showRun(run));
      assert.equal(logsWith(run.logs, 'starting a new session from the beginning').length, 0);
      await env.server.waitForLog((l) => l.msg === 'resume of a committed session: answered COMMITTED', 5000);
      await restoreTheBackup(env, tree, { onlyFile: true });
    } finally {
      await proxy.close();
      await env.server.stop();
    }
  });
}

/**
 * server.verify.schedule: the running server re-reads its archives on a cron schedule (here every
 * second); a clean archive counts as ok, a flipped byte makes it bad, in the log and on /metrics.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree } from '../helpers/tree.js';
import { agentConfigObject, committedBackups, makeWorkspace, showRun, writeServerConfig, flipMiddleByte } from './harness.js';

describe('scheduled verify', { timeout: 90_000 }, () => {
  const tmp = new TempDirs();
  let server: ServerHandle | undefined;
  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  it('finds a clean archive good and, after a flipped byte, bad: log lines and /metrics', async () => {
    const { work, pki } = await makeWorkspace(tmp, 'nbackup-it-verify-', ['agent-a']);
    const store = join(work, 'store');
    const yaml = join(work, 'server.yaml');
    await writeServerConfig(yaml, pki, { main: { base_dir: store, max_backups: 5 } }, {
      verify: { schedule: '* * * * * *' },
      metrics: { enabled: true, listen: '127.0.0.1:0' },
    });
    server = await startServer(yaml);
    const metricsLine = await server.waitForLog((l) => l.msg === 'metrics listening (/metrics, /healthz)', 5000);
    const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${metricsLine.port as number}/metrics`)).text();
    const tree = await makeTree(join(work, 'src'));
    const agentYaml = join(work, 'agent.yaml');
    await writeYaml(agentYaml, agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [tree.root] }]));
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, showRun(r));
    const name = (await committedBackups(join(store, 'agent-a', 'app')))[0];

    const clean = await server.waitForLog((l) => l.msg === 'scheduled verify finished' && l.ok === 1 && l.bad === 0, 10_000);
    assert.ok(typeof clean.seconds === 'number');
    const good = await scrape();
    assert.match(good, /^nbackup_verify_archives\{storage="main",result="ok"\} 1$/m);
    assert.match(good, /^nbackup_verify_archives\{storage="main",result="bad"\} 0$/m);
    assert.match(good, /^nbackup_verify_last_run_timestamp_seconds \d+$/m);
    assert.doesNotMatch(good, /^nbackup_verify_bad_archive\{/m);

    const file = join(store, 'agent-a', 'app', name);
    flipMiddleByte(file, 0x40);
    const failed = await server.waitForLog((l) => l.msg === 'archive failed verification', 10_000);
    assert.equal(failed.archive, `agent-a/app/${name}`);
    assert.match(String(failed.reason), /SHA-256|not a valid compressed tar/);
    await server.waitForLog((l) => l.msg === 'scheduled verify finished: bad archives found' && l.bad === 1, 10_000);
    const bad = await scrape();
    assert.match(bad, /^nbackup_verify_archives\{storage="main",result="bad"\} 1$/m);
    assert.match(bad, new RegExp(`^nbackup_verify_bad_archive\\{storage="main",archive="agent-a/app/${name.replace(/\./g, '\\.')}"\\} 1$`, 'm'));
  });
});

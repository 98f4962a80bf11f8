/**
 * server.verify.schedule: the running server re-reads its archives on a cron schedule (here every
 * second); a clean archive counts as ok, a flipped byte makes it bad, in the log and on /metrics.
 * With the server's clock moved while it runs (faketime): set back an hour, the verify goes on at
 * once on the new clock; set forward over 1800 times, it runs once, then on schedule.
 */
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { faketimeFileEnv } from '../helpers/faketime.js';
import { runAgent, startServer, writeYaml, type LogLine, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree } from '../helpers/tree.js';
import { waitUntil } from '../helpers/wait.js';
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

  it('the clock set back an hour, then forward again: the verify goes on every 2 s of the new time, once per time, no burst', async () => {
    const { work, pki } = await makeWorkspace(tmp, 'nbackup-it-verify-clock-', ['agent-a']);
    const yaml = join(work, 'server.yaml');
    await writeServerConfig(yaml, pki, { main: { base_dir: join(work, 'store'), max_backups: 5 } }, { verify: { schedule: '*/2 * * * * *' } });
    const clock = join(work, 'clock');
    fs.writeFileSync(clock, '+0\n');
    const srv = await startServer(yaml, { env: faketimeFileEnv(clock) });
    const tail = (): string => srv.output().slice(-30).join('\n');
    const withMsg = (msg: string): LogLine[] => srv.logs().filter((l) => l.msg === msg);
    // Log lines carry the server's (faked) time.
    const timeOf = (l: LogLine): number => Number(l.time);
    try {
      await srv.waitForLog((l) => l.msg === 'scheduled verify finished', 10_000);
      const stepBack = Date.now();
      fs.writeFileSync(clock, '-1h\n');
      // Before the fix the next run stayed an hour ahead on the new clock: nothing ran for an hour.
      const onClockBack = (): LogLine[] => withMsg('scheduled verify finished').filter((l) => timeOf(l) < stepBack - 3000_000);
      await waitUntil(() => onClockBack().length >= 3, 15_000, 'three runs on the clock an hour back', tail);
      const back = withMsg('the clock was set back; verify rescheduled');
      assert.equal(back.length, 1, `the step is logged once\n${tail()}`);
      assert.ok(Date.parse(String(back[0].was)) - Date.parse(String(back[0].next)) > 3500_000, JSON.stringify(back[0]));

      // Forward over 1800 schedule times: before the fix, one run or "skipped" line for each.
      const stepForward = Date.now();
      fs.writeFileSync(clock, '+0\n');
      const after = (msg: string): LogLine[] => withMsg(msg).filter((l) => timeOf(l) >= stepForward);
      await waitUntil(() => after('scheduled verify finished').length >= 3, 15_000, 'three runs after the clock went forward', tail);
      assert.deepEqual(after('scheduled verify skipped: the previous run is still going'), [], 'no line per time stepped over');
      const started = after('scheduled verify started').map(timeOf);
      for (let i = 1; i < started.length; i++) {
        assert.ok(started[i] - started[i - 1] > 1000, `runs started ${started.map((t) => t - stepForward).join(', ')} ms after the step: a burst`);
      }
    } finally {
      await srv.stop();
    }
  });
});

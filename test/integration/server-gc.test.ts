/**
 * Full GCs in a server that has been up a while (src/cli/heap.ts): a 160 MiB backup to the real
 * server, counted by its own /metrics (`nodejs_gc_duration_seconds` with kind="major", from
 * prom-client's default metrics).
 *
 * V8 starts no incremental marking in a process's first seconds ("load" time), so a server that
 * takes a backup right after it starts never shows the problem; a production server is up for
 * days. The test therefore lets the server pass that window before the backup. Without the heap
 * setting (its call taken out of the built server) the server did 9 full GCs here, one per ~18 MiB
 * received; with it, 1.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { sample } from '../helpers/metrics.js';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, makeSource, makeWorkspace, showRun, writeServerConfig } from './harness.js';

/** Seconds V8 treats as start-up after a process begins (its kMaxLoadTimeMs is 7 s), plus margin. */
const PAST_START_UP_S = 9;
const MIB = 1024 * 1024;

/** Full GCs so far: prom-client shows the kind="major" series only once there has been one. */
function majorGcs(text: string): number {
  return text.includes('nbackup_server_nodejs_gc_duration_seconds_count{kind="major"} ') ? sample(text, 'nbackup_server_nodejs_gc_duration_seconds_count', 'kind="major"') : 0;
}

describe('server heap under a long backup', { timeout: 120_000 }, () => {
  const tmp = new TempDirs();
  let server: ServerHandle | null = null;
  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  it('a server up past V8 start-up does at most 2 full GCs while it takes 160 MiB', async (t) => {
    const { work, pki } = await makeWorkspace(tmp, 'nbackup-it-gc-', ['agent-a']);
    // Incompressible, so the server receives (and hashes, and writes) all 160 MiB.
    const tree = await makeSource(join(work, 'src'), { files: 4, size: 40 * MIB, seed: 71 });
    const serverYaml = join(work, 'server.yaml');
    await writeServerConfig(serverYaml, pki, { main: { base_dir: join(work, 'store'), max_backups: 2 } }, { metrics: { enabled: true, listen: '127.0.0.1:0' } });
    server = await startServer(serverYaml);
    const metricsLine = await server.waitForLog((l) => l.msg === 'metrics listening (/metrics, /healthz)', 5000);
    const scrape = async () => (await fetch(`http://127.0.0.1:${metricsLine.port as number}/metrics`)).text();
    const startedAt = sample(await scrape(), 'nbackup_server_process_start_time_seconds');
    // Bounded: the wait ends once the server's own start time is PAST_START_UP_S behind.
    for (let i = 0; i < 40 && Date.now() / 1000 - startedAt < PAST_START_UP_S; i++) await delay(250);
    assert.ok(Date.now() / 1000 - startedAt >= PAST_START_UP_S, 'the server is past start-up');

    const before = majorGcs(await scrape());
    const agentYaml = join(work, 'agent.yaml');
    await writeYaml(agentYaml, agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes }]));
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, showRun(r));
    const text = await scrape();
    const received = sample(text, 'nbackup_received_bytes_total');
    assert.ok(received >= 160 * MIB, `the server received the whole stream (${received} bytes)`);
    assert.ok(sample(text, 'nbackup_server_nodejs_gc_duration_seconds_count', 'kind="minor"') > 0, 'the GC series are there');
    const majors = majorGcs(text) - before;
    t.diagnostic(`${majors} full GCs while receiving ${received} bytes`);
    assert.ok(majors <= 2, `${majors} full GCs during the backup (at most 2)`);
  });
});

/**
 * Per-entry `before` / `after` hooks and `bandwidth_limit`, through the real CLIs. Hooks: a dump
 * made by `before` is in the archive (GNU tar lists it) and gone after `after`, which hears the
 * outcome; a failing `before` fails the entry with its status and stderr and no backup is made.
 * Bandwidth: the bytes on the wire, counted by a TCP proxy in 20 ms samples, stay within 10 % of
 * the limit over every 1-second window, single stream and parallel alike.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent, writeYaml } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { gnuTarList } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, makeWorkspace, oneLog, showRun, startEnv, tmpFiles, type Env } from './harness.js';

const MiB = 1024 * 1024;
const tmp = new TempDirs();
let pki: Pki;
let work: string;
let env: Env;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-hooks-', ['agent-a']));
  env = await startEnv(tmp, pki, 'nbk-hooks-env-', { storage: { max_backups: 10 } });
});
after(async () => {
  await env.server.stop();
  await tmp.cleanup();
});

async function agentYaml(name: string, port: number, source: string, entry: Record<string, unknown>): Promise<string> {
  const cfg = agentConfigObject(pki, 'agent-a', port, [{ name, storage: 'main', sources: [source] }]);
  Object.assign((cfg.backups as Record<string, unknown>[])[0], entry);
  const file = join(work, `${name}.yaml`);
  await writeYaml(file, cfg);
  return file;
}

describe('hooks', { timeout: 120_000 }, () => {
  it('before makes a dump that is archived; after removes it and hears "success"', async () => {
    const src = join(work, 'app');
    fs.mkdirSync(join(src, 'dump'), { recursive: true });
    fs.writeFileSync(join(src, 'keep.txt'), 'kept\n');
    const outcome = join(work, 'outcome-ok');
    const yaml = await agentYaml('hooked', env.server.port, src, {
      before: `echo "CREATE TABLE t;" > ${src}/dump/db.sql && echo dump-written`,
      after: `rm -f ${src}/dump/db.sql && echo "$NBACKUP_OUTCOME $NBACKUP_BACKUP" > ${outcome}`,
      hook_timeout: '30s',
    });
    const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, showRun(r));
    const archives = await committedBackups(join(env.store, 'agent-a', 'hooked'));
    assert.equal(archives.length, 1);
    const members = await gnuTarList(join(env.store, 'agent-a', 'hooked', archives[0]));
    assert.ok(members.some((m) => m.endsWith('app/dump/db.sql')), `dump archived: ${members.join(', ')}`);
    assert.ok(!fs.existsSync(join(src, 'dump', 'db.sql')), 'after removed the dump');
    assert.equal(fs.readFileSync(outcome, 'utf8'), 'success hooked\n');
    assert.ok(r.logs.some((l) => l.hook === 'before' && l.msg === 'dump-written'), 'hook output is in the log');
    assert.equal(oneLog(r.logs, 'before hook finished', showRun(r)).exitCode, 0);
  });

  it('a failing before fails the entry with its status and stderr; no backup; after hears "failure"', async () => {
    const src = join(work, 'app2');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(join(src, 'x.txt'), 'x\n');
    const outcome = join(work, 'outcome-bad');
    const yaml = await agentYaml('broken', env.server.port, src, {
      before: 'echo "pg_dump: connection refused" >&2; exit 3',
      after: `echo "$NBACKUP_OUTCOME: $NBACKUP_ERROR" > ${outcome}`,
    });
    const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
    assert.equal(r.code, 1, showRun(r));
    assert.match(r.stderr, /backup "broken" failed: before hook exited with status 3: pg_dump: connection refused; the backup was not run/);
    assert.ok(!r.logs.some((l) => l.msg === 'backup started'), 'no session was opened');
    assert.deepEqual(await committedBackups(join(env.store, 'agent-a', 'broken')), []);
    assert.match(fs.readFileSync(outcome, 'utf8'), /^failure: before hook exited with status 3/);
  });

  it('a before hook that outlives hook_timeout is killed (with its children) and fails the entry', async () => {
    const src = join(work, 'app3');
    fs.mkdirSync(src, { recursive: true });
    const yaml = await agentYaml('slow', env.server.port, src, { before: 'sleep 30 & sleep 30; wait', hook_timeout: '1s' });
    const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 20_000 });
    assert.equal(r.code, 1, showRun(r));
    assert.match(r.stderr, /before hook did not finish within 1s; the backup was not run/);
    assert.ok(r.durationMs < 10_000, `took ${r.durationMs} ms`);
  });
});

/** The most bytes in any window of `windowMs` in a series of cumulative samples. */
function maxInWindow(samples: { t: number; bytes: number }[], windowMs: number): number {
  let best = 0;
  let j = 0;
  for (let i = 0; i < samples.length; i++) {
    while (samples[i].t - samples[j].t > windowMs) j++;
    // samples[j-1] is the last one before the window: bytes since then may all fall inside it.
    const from = j > 0 ? samples[j - 1].bytes : 0;
    best = Math.max(best, samples[i].bytes - from);
  }
  return best;
}

describe('bandwidth_limit', { timeout: 120_000 }, () => {
  before(() => {
    fs.mkdirSync(join(work, 'bw'), { recursive: true });
    for (let i = 0; i < 5; i++) fs.writeFileSync(join(work, 'bw', `r${i}.bin`), randomBytes(8 * MiB));
  });

  for (const parallels of [0, 3]) {
    it(`40 MiB at 8mb takes 5 s ± 15 % and no second carries more than 8.8 MiB (parallels ${parallels})`, async () => {
      const proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port } });
      try {
        const yaml = await agentYaml(`bw${parallels}`, proxy.port, join(work, 'bw'), { bandwidth_limit: '8mb', parallels, auto_scaler: { enabled: false } });
        const samples: { t: number; bytes: number }[] = [];
        const sampler = setInterval(() => samples.push({ t: performance.now(), bytes: proxy.bytesClientToServer }), 20);
        const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
        clearInterval(sampler);
        assert.equal(r.code, 0, showRun(r));
        const seconds = Number(oneLog(r.logs, 'backup committed', showRun(r)).durationS);
        assert.ok(seconds >= 5 * 0.85 && seconds <= 5 * 1.15, `took ${seconds} s`);
        const peak = maxInWindow(samples, 1000);
        console.log(JSON.stringify({ parallels, seconds, peakWindowMiB: Number((peak / MiB).toFixed(2)), wireMiB: Number((proxy.bytesClientToServer / MiB).toFixed(2)) }));
        assert.ok(peak <= 8.8 * MiB, `peak 1 s window ${(peak / MiB).toFixed(2)} MiB`);
        assert.ok(proxy.bytesClientToServer >= 40 * MiB);
        assert.deepEqual(await tmpFiles(env.store), []);
      } finally {
        await proxy.close();
      }
    });
  }
});

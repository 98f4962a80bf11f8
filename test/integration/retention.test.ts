/**
 * GFS retention on a live server: a storage seeded with 60 days of backups, `retention --dry-run`
 * deleting nothing, then a burst of 20 backups in a row, after which every copy older than today
 * that the policy keeps for a single backup today is still there.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { archiveName, archiveTime } from '../../src/archive/names.js';
import { selectRetention, type KeepPolicy } from '../../src/server/retention.js';
import { SERVER_BIN, runAgent, startServer, writeYaml } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, makeWorkspace, serverConfigObject, showRun } from './harness.js';

const DAY = 86_400_000;

describe('retention', { timeout: 180_000 }, () => {
  const tmp = new TempDirs();
  after(() => tmp.cleanup());

  it('a burst of 20 backups keeps every daily and weekly copy older than today; --dry-run deletes nothing', async () => {
    const { work, pki } = await makeWorkspace(tmp, 'nbackup-it-retention-', ['agent-a']);
    const store = join(work, 'store');
    const keep: KeepPolicy = { last: 3, hourly: 0, daily: 7, weekly: 4, monthly: 3, yearly: 0 };
    const cfg = serverConfigObject(pki, { main: { base_dir: store } });
    const main = (cfg.storages as Record<string, Record<string, unknown>>).main;
    delete main.max_backups;
    main.keep = keep;
    const serverYaml = join(work, 'server.yaml');
    await writeYaml(serverYaml, cfg);
    const dir = join(store, 'agent-a', 'app');
    fs.mkdirSync(dir, { recursive: true });
    const now = Date.now();
    const startOfToday = now - (now % DAY);
    const seeded = Array.from({ length: 60 }, (_, i) => archiveName(startOfToday - (i + 1) * DAY + 6 * 3_600_000, 'gzip'));
    for (const n of seeded) fs.writeFileSync(join(dir, n), 'seeded');

    const dry = await runAgent(['retention', '--config', serverYaml, '--dry-run'], { script: SERVER_BIN, timeoutMs: 30_000 });
    assert.equal(dry.code, 0, showRun(dry));
    assert.match(dry.stdout, /^main\/agent-a\/app \(keep last 3, daily 7, weekly 4, monthly 3\):$/m);
    assert.match(dry.stdout, new RegExp(`^  keep {4}${seeded[0]} {2}\\(last 1/3, daily \\S+, weekly \\S+`, 'm'));
    assert.match(dry.stdout, new RegExp(`^  would delete ${seeded[59]} {2}\\(no rule keeps it\\)$`, 'm'));
    assert.equal((await committedBackups(dir)).length, 60, '--dry-run deleted nothing');

    // What the policy keeps older than today when one backup comes today.
    const asArchives = (names: string[]) => names.map((name) => ({ name, time: archiveTime(name)! }));
    const single = selectRetention(asArchives([...seeded, archiveName(now, 'gzip')]), keep);
    const expected = single.filter((d) => d.keep && d.time < startOfToday).map((d) => d.name).sort();
    assert.ok(single.some((d) => d.time < startOfToday && d.reasons.some((r) => r.startsWith('daily'))));
    assert.ok(single.some((d) => d.time < startOfToday && d.reasons.some((r) => r.startsWith('weekly'))));

    const server = await startServer(serverYaml);
    try {
      const src = join(work, 'src');
      fs.mkdirSync(src);
      fs.writeFileSync(join(src, 'f.txt'), 'data');
      const yaml = join(work, 'agent.yaml');
      await writeYaml(yaml, agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [src] }]));
      for (let i = 0; i < 20; i++) {
        const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
        assert.equal(r.code, 0, showRun(r));
      }
    } finally {
      await server.stop();
    }
    const left = await committedBackups(dir);
    const older = left.filter((n) => archiveTime(n)! < startOfToday).sort();
    assert.deepEqual(older, expected, 'the burst pushed out a copy older than today');
    assert.equal(left.filter((n) => archiveTime(n)! >= startOfToday).length, 3, 'of the 20 new ones, the newest `last` stay');
    const names = fs.readdirSync(dir);
    assert.deepEqual(names.filter((n) => n.endsWith('.sha256')).sort(), left.filter((n) => archiveTime(n)! >= startOfToday).map((n) => `${n}.sha256`).sort(), 'sidecars went with their archives');
  });
});

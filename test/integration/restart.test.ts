/**
 * A server restart in the middle of a backup costs at most the agent's ring buffer of resend,
 * never a start from zero: the server is killed (SIGKILL) or stopped (SIGTERM) while a 300 MB
 * backup is under way, in single-stream and in 4-stream mode; the next server takes the session
 * up from what is on disk, the agent resumes, the backup commits and restores exactly, and the
 * bytes the agent sent in all stay below the archive size plus its ring buffer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import type { TreeInfo } from '../helpers/tree.js';
import { logsWith, makeWorkspace, restoreTheBackup, showRun, startEnv, waitForTempBytes, writeAppAgentYaml, writeServerConfig } from './harness.js';

const MiB = 1024 * 1024;
const RING = 64 * MiB;
const tmp = new TempDirs();
let pki: Pki;
let work: string;
let tree: TreeInfo;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-restart-', ['agent-a']));
  // 300 MB that does not compress: the archive is as big as the data.
  const root = join(work, 'src');
  fs.mkdirSync(root);
  for (let i = 0; i < 30; i++) fs.writeFileSync(join(root, `part${String(i).padStart(2, '0')}.bin`), randomBytes(10 * MiB));
  tree = { root, excludes: [], excludedPaths: [], hardLinkGroups: [], notable: {} };
});

after(() => tmp.cleanup());

for (const parallels of [0, 4]) {
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    const mode = parallels === 0 ? 'single stream' : `${parallels} streams`;
    test(`${mode}, server ${signal === 'SIGKILL' ? 'killed (SIGKILL)' : 'stopped (SIGTERM)'} at 100 MB: the backup resumes and commits`, async (t) => {
      const env = await startEnv(tmp, pki, `nbk-restart-${parallels}-${signal}-`);
      let server = env.server;
      try {
        const yaml = await writeAppAgentYaml(
          work,
          pki,
          server.port,
          tree,
          {
            resume: { buffer_size: RING, chunk_size: '1mb' },
            // Re-joins wait 1 s, 2 s, 4 s: a stream outlives a restart of up to 7 s (the default).
            retry: { max_attempts: 10, initial_delay: '1s', max_delay: '4s', connect_timeout: '5s', read_timeout: '20s' },
          },
          { parallels, auto_scaler: { enabled: false } },
        );
        const agent = runAgent(['--config', yaml, '--once'], { timeoutMs: 120_000 });
        const started = await server.waitForLog((l) => l.msg === 'session started', 20_000);
        await waitForTempBytes(join(env.store, 'agent-a', 'app'), String(started.session), 100 * MiB, 60_000);
        if (signal === 'SIGKILL') {
          server.proc.kill('SIGKILL');
          await server.waitForExit(5000);
        } else {
          await server.stop();
        }
        // The next server, on the same address.
        await writeServerConfig(join(env.dir, 'server.yaml'), pki, { main: { base_dir: env.store, max_backups: 3 } }, { listen: `127.0.0.1:${server.port}` });
        server = await startServer(join(env.dir, 'server.yaml'));
        const adopted = await server.waitForLog((l) => l.msg === 'session taken up after a restart; waiting for its agent', 5000);
        assert.equal(adopted.session, started.session);

        const run = await agent;
        assert.equal(run.code, 0, `${showRun(run)}\n--- server after the restart ---\n${server.output().slice(-20_000)}`);
        assert.equal(logsWith(run.logs, 'starting a new session from the beginning').length, 0, 'never from zero');
        const committed = logsWith(run.logs, 'backup committed')[0];
        const archive = Number(committed.bytes);
        const sent = Number(committed.bytesSent);
        t.diagnostic(JSON.stringify({ archiveMB: +(archive / 1e6).toFixed(1), sentMB: +(sent / 1e6).toFixed(1), resentMB: +((sent - archive) / 1e6).toFixed(1), ringMB: RING / 1e6 }));
        assert.ok(sent < archive + RING, `sent ${sent} bytes for a ${archive}-byte archive (ring ${RING})`);
        await server.waitForLog((l) => l.msg === 'session committed' && l.session === started.session, 5000);
        await restoreTheBackup({ ...env, server }, tree, { onlyFile: true });
      } finally {
        await server.stop();
      }
    });
  }
}

/**
 * A storage whose disk fills up: the server stops the session before the filesystem crosses its
 * reserve (min_free), tells the agent why, the agent fails at once (no restart from zero), and an
 * older backup in that storage is untouched. The storage is a small tmpfs mounted for the server
 * process alone (a private mount namespace); the test watches it through /proc/<pid>/root.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HealthStatus, ReadStatus } from '../../protocol/constants.js';
import { decodeIndexAck, encodeIndexPut } from '../../protocol/frames.js';
import { sha256File } from '../helpers/compare.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, makeWorkspace, showRun, writeServerConfig } from './harness.js';
import { rawAgent, rawHealth } from './raw-client.js';

const MiB = 1024 * 1024;
const TMPFS = 48 * MiB;
const RESERVE = 16 * MiB;

/** Runs the server with a fresh tmpfs of `size` bytes mounted on `store`, seen by it alone. */
function tmpfsWrapper(store: string, size: number): string[] {
  const mount = `mount -t tmpfs -o size=${size} nbackup-test "$0" && exec "$@"`;
  const unshare = process.getuid?.() === 0 ? ['unshare', '--mount', '--propagation', 'private'] : ['unshare', '--user', '--map-root-user', '--mount'];
  return [...unshare, 'sh', '-c', mount, store];
}

const tmp = new TempDirs();
let pki: Pki;
let work: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-full-', ['agent-a']));
  fs.mkdirSync(join(work, 'small'));
  fs.writeFileSync(join(work, 'small', 'data.bin'), randomBytes(MiB));
  // More incompressible data than the storage can take above its reserve.
  fs.mkdirSync(join(work, 'big'));
  for (let i = 0; i < 8; i++) fs.writeFileSync(join(work, 'big', `part${i}.bin`), randomBytes(8 * MiB));
});

after(() => tmp.cleanup());

for (const parallels of [0, 4]) {
  describe(`a backup larger than the free space (${parallels === 0 ? 'single stream' : `${parallels} streams`})`, () => {
    let dir: string;
    let store: string;
    let server: ServerHandle;
    let seen: string;

    before(async () => {
      dir = await tmp.make(`nbk-full-p${parallels}-`);
      store = join(dir, 'store');
      fs.mkdirSync(store);
      await writeServerConfig(join(dir, 'server.yaml'), pki, { main: { base_dir: store, min_free: RESERVE, max_backups: 5 } });
      server = await startServer(join(dir, 'server.yaml'), { wrapper: tmpfsWrapper(store, TMPFS) });
      // The storage as the server sees it (its own mount namespace).
      seen = `/proc/${server.proc.pid}/root${store}`;
    });

    after(() => server?.stop());

    const agentYaml = async (name: string, source: string): Promise<string> => {
      const cfg = agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [source] }]);
      (cfg.backups as Record<string, unknown>[])[0].parallels = parallels;
      (cfg.backups as Record<string, unknown>[])[0].auto_scaler = { enabled: false };
      cfg.retry = { max_attempts: 3, initial_delay: '200ms', connect_timeout: '5s', read_timeout: '15s' };
      // With a control channel: the server's CABT comes over it too.
      cfg.daemon = { control_channel: { enabled: true, keepalive_interval: '1s', reconnect_delay: '200ms', max_reconnect_delay: '1s' } };
      const file = join(work, `${name}-p${parallels}.yaml`);
      await writeYaml(file, cfg);
      return file;
    };

    it('stops before the reserve, says why, fails at once, and leaves the older backup intact', async (t) => {
      const st = fs.statfsSync(seen);
      assert.ok(st.blocks * st.bsize <= TMPFS, `the storage is the ${TMPFS / MiB} MiB tmpfs (${(st.blocks * st.bsize) / MiB} MiB)`);
      const first = await runAgent(['--config', await agentYaml('small', join(work, 'small')), '--once']);
      assert.equal(first.code, 0, showRun(first));
      const backupDir = join(seen, 'agent-a', 'app');
      const [older] = await committedBackups(backupDir);
      const olderSha = await sha256File(join(backupDir, older));

      let minFree = Infinity;
      const watch = setInterval(() => {
        const s = fs.statfsSync(seen);
        minFree = Math.min(minFree, s.bavail * s.bsize);
      }, 5);
      const t0 = Date.now();
      let run;
      try {
        run = await runAgent(['--config', await agentYaml('big', join(work, 'big')), '--once'], { timeoutMs: 60_000 });
      } finally {
        clearInterval(watch);
      }
      const seconds = (Date.now() - t0) / 1000;
      assert.notEqual(run.code, 0, showRun(run));
      assert.ok(seconds < 15, `the agent gave up after ${seconds.toFixed(1)} s`);
      const line = run.stderr.split('\n').find((l) => l.includes('backup "app" failed'));
      assert.match(String(line), /NO_SPACE.*storage "main" is out of space: [\d.]+ MiB free.*reserve \(min_free\) of 16\.0 MiB/, showRun(run));
      assert.equal(run.logs.filter((l) => l.msg === 'starting a new session from the beginning').length, 0, 'no restart from zero');
      assert.ok(minFree >= RESERVE, `free space fell to ${(minFree / MiB).toFixed(2)} MiB, below the ${RESERVE / MiB} MiB reserve`);
      t.diagnostic(JSON.stringify({ seconds, minFreeMiB: Number((minFree / MiB).toFixed(2)), stderr: line }));

      assert.deepEqual(await committedBackups(backupDir), [older], 'only the older backup');
      assert.equal(await sha256File(join(backupDir, older)), olderSha, 'and it is intact');
      const left = fs.readdirSync(backupDir).filter((f) => f.endsWith('.tmp'));
      assert.deepEqual(left, [], 'no partial file kept');
      await server.waitForLog((l) => l.msg === 'session stopped: out of space', 5000);
      await server.waitForLog((l) => l.msg === 'agent told to abort on its control channel (CABT disk full)', 5000);
      assert.equal((await rawHealth(server.port, pki)).status, HealthStatus.READY, 'the server serves on, with its space back');
    });

    if (parallels === 0) {
      it('refuses an index that would cross the reserve, before a byte of it is written', async () => {
        const committed = server.logs().find((l) => l.msg === 'session committed');
        assert.ok(committed, 'the small backup was committed');
        const c = rawAgent(server.port, pki);
        try {
          await c.connected();
          // More than the whole tmpfs: only the announced length is sent.
          c.write(encodeIndexPut({ sessionId: String(committed.session), length: TMPFS }));
          const answer = await c.read(decodeIndexAck, 5000, 'index answer');
          assert.equal(answer.status, ReadStatus.REJECT);
          assert.match(answer.message, /index not stored: storage "main" is out of space/);
        } finally {
          c.destroy();
        }
        const left = fs.readdirSync(join(seen, 'agent-a', 'app')).filter((f) => f.endsWith('.tmp'));
        assert.deepEqual(left, [], 'no partial index');
        assert.equal((await rawHealth(server.port, pki)).status, HealthStatus.READY);
      });
    }
  });
}

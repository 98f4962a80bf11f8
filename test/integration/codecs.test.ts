/**
 * Archive formats end to end with the real CLIs: `format: zstd` in one and in several streams
 * (a `.tar.zst` that `zstd -t`, `tar --zstd -x` and plain `tar -x` take, restoring the fixture tree
 * exactly); rotation that counts both formats alike; a version-2 handshake, which has no format
 * line, still gets a `.tar.gz`; and an agent without the native addon (NBACKUP_ADDON_DIR pointing
 * at an empty folder) falls back to node:zlib, says so once, and writes a valid archive, while
 * `format: zstd` fails before connecting with the packages to install.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AckStatus, encodeSingleMode, FinalStatus } from '../../protocol/index.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent } from '../helpers/proc.js';
import { runCli } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, type TreeInfo } from '../helpers/tree.js';
import { committedBackups, logsWith, makeWorkspace, restoreAndCompare, restoreTheBackup, showRun, startEnv, writeAppAgentYaml } from './harness.js';
import { rawAgent, rawHandshake, readUntilFinal, trailerFor } from './raw-client.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let tree: TreeInfo;
let noAddons: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-codecs-', ['agent-a']));
  tree = await makeTree(join(work, 'src'));
  noAddons = join(work, 'no-addons');
  await mkdir(noAddons);
});

after(() => tmp.cleanup());

for (const parallels of [0, 3]) {
  test(`format zstd, ${parallels === 0 ? 'single stream' : `${parallels} streams`}: a .tar.zst that zstd -t and GNU tar take, restoring the tree exactly`, async () => {
    const env = await startEnv(tmp, pki, `nbk-zstd-${parallels}-`);
    try {
      const yaml = await writeAppAgentYaml(work, pki, env.server.port, tree, {}, { compression: { format: 'zstd', level: 3 }, parallels, auto_scaler: { enabled: false } });
      const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, showRun(run));
      const started = logsWith(run.logs, 'backup started')[0];
      assert.equal(started.format, 'zstd');
      assert.equal(started.engine, 'zstd');
      const { file } = await restoreTheBackup(env, tree, { onlyFile: true });
      assert.match(file, /\.tar\.zst$/);
      // Plain `tar -xf` finds the format by itself.
      const plain = join(env.dir, 'plain');
      await mkdir(plain);
      await runCli('tar', ['-xf', file, '-C', plain], { timeoutMs: 30_000 });
      const listing = await runCli('tar', ['-tf', file], { timeoutMs: 30_000 });
      assert.ok(listing.stdout.split('\n').length > 5, listing.stdout);
      const committed = await env.server.waitForLog((l) => l.msg === 'session committed', 5000);
      assert.match(String(committed.file), /\.tar\.zst$/);
    } finally {
      await env.server.stop();
    }
  });
}

test('rotation counts .tar.gz and .tar.zst alike: max_backups 2 keeps the two newest of either format', async () => {
  const env = await startEnv(tmp, pki, 'nbk-rot-mixed-', { storage: { max_backups: 2 } });
  try {
    const formats = ['gzip', 'zstd', 'gzip'] as const;
    for (const format of formats) {
      const yaml = await writeAppAgentYaml(work, pki, env.server.port, tree, {}, { compression: { format } });
      const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, showRun(run));
    }
    const kept = await committedBackups(join(env.store, 'agent-a', 'app'));
    assert.deepEqual(
      kept.map((f) => f.replace(/^.*\.tar\./, '')),
      ['zst', 'gz'],
      `the newest two, in commit order: ${kept.join(', ')}`,
    );
    await restoreAndCompare(join(env.store, 'agent-a', 'app', kept[0]), tree, join(env.dir, 'restore-zst'));
  } finally {
    await env.server.stop();
  }
});

test('a version-2 handshake (no format line) still gets a .tar.gz; a v3 handshake naming an unknown format is refused by name', async () => {
  const env = await startEnv(tmp, pki, 'nbk-v2-');
  try {
    const c = rawAgent(env.server.port, pki);
    const ack = await rawHandshake(c, { agent: 'agent-a', version: 2 });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    // Any bytes do for the server (it checks the SHA-256 and size, not the content).
    const body = Buffer.from('version-2 body bytes\n'.repeat(100));
    c.socket.write(Buffer.concat([encodeSingleMode(), body, trailerFor(body)]));
    c.socket.end();
    const { final } = await readUntilFinal(c);
    assert.equal(final, FinalStatus.OK);
    const kept = await committedBackups(join(env.store, 'agent-a', 'app'));
    assert.equal(kept.length, 1);
    assert.match(kept[0], /\.tar\.gz$/);

    const x = rawAgent(env.server.port, pki);
    const refused = await rawHandshake(x, { agent: 'agent-a', format: 'xz' });
    assert.equal(refused.status, AckStatus.REJECT);
    assert.match(refused.message, /xz/);
    x.destroy();
  } finally {
    await env.server.stop();
  }
});

test('without the native addon: the agent says so once, naming the packages, and writes a valid .tar.gz with node:zlib', async () => {
  const env = await startEnv(tmp, pki, 'nbk-zlib-');
  try {
    const yaml = await writeAppAgentYaml(work, pki, env.server.port, tree, {}, { parallels: 2, auto_scaler: { enabled: false } });
    const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000, env: { NBACKUP_ADDON_DIR: noAddons } });
    assert.equal(run.code, 0, showRun(run));
    const warnings = run.logs.filter((l) => /node:zlib/.test(String(l.msg)));
    assert.equal(warnings.length, 1, `one warning about the fallback:\n${showRun(run)}`);
    assert.match(String(warnings[0].msg), /libisal-dev libdeflate-dev libzstd-dev/);
    assert.equal(logsWith(run.logs, 'backup started')[0].engine, 'zlib');
    const { file } = await restoreTheBackup(env, tree, { onlyFile: true });
    assert.match(file, /\.tar\.gz$/);
  } finally {
    await env.server.stop();
  }
});

test('without the native addon, format zstd fails at once with what to install, and nothing reaches the server', async () => {
  const env = await startEnv(tmp, pki, 'nbk-nozstd-');
  try {
    const yaml = await writeAppAgentYaml(work, pki, env.server.port, tree, {}, { compression: { format: 'zstd' } });
    const run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000, env: { NBACKUP_ADDON_DIR: noAddons } });
    assert.notEqual(run.code, 0, showRun(run));
    assert.match(run.stdout + run.stderr, /format zstd needs the native codec addon.*libzstd-dev/s);
    assert.equal(env.server.logs().filter((l) => l.msg === 'session started').length, 0, 'no session was opened');
  } finally {
    await env.server.stop();
  }
});

test('--version names the active codec engines, or node:zlib and the packages when the addon is absent', async () => {
  const full = await runAgent(['--version'], { timeoutMs: 15_000 });
  assert.equal(full.code, 0, showRun(full));
  assert.match(full.stdout, /ISA-L igzip \S+, 4-9 libdeflate \S+; zstd levels 1-19 libzstd \S+/);
  const bare = await runAgent(['--version'], { timeoutMs: 15_000, env: { NBACKUP_ADDON_DIR: noAddons } });
  assert.equal(bare.code, 0, showRun(bare));
  assert.match(bare.stdout, /node:zlib only.*libisal-dev libdeflate-dev libzstd-dev/s);
});

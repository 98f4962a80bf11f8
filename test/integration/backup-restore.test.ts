/**
 * End to end with the real CLIs over real mTLS on 127.0.0.1: back a tree up, restore it with GNU
 * tar, compare; rotation; per-entry failures; --backup; health.
 */
import assert from 'node:assert/strict';
import { statfsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, spawnLogged, startServer, writeYaml, type AgentResult, type ServerHandle } from '../helpers/proc.js';
import { gnuTarList, gzipTest } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, randomBytesSeeded, type TreeInfo } from '../helpers/tree.js';
import {
  agentConfigObject,
  committedBackups,
  listFilesRecursive,
  makeWorkspace,
  restoreAndCompare,
  restoreArchive,
  restoredPath,
  showRun,
  writeAgentConfig,
  writeServerConfig,
} from './harness.js';

const AGENT_TIMEOUT_MS = 45_000;
/** A valid agent name (see protocol/names.ts) with characters that RFC 2253 escapes in a DN string. */
const SPECIAL_AGENT = 'web+db,1';
const TAR_TIMEOUTS = { timeoutMs: 30_000 };

/** stderr lines, without Node's own warnings. */
function stderrLines(r: AgentResult): string[] {
  return r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('(node:'));
}

describe('backup → restore with the real CLIs', { timeout: 110_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let mainDir: string; // storage "main", max_backups 2
  let otherDir: string; // storage "other", max_backups 5
  let tree: TreeInfo;
  let agentYaml: string;

  before(async () => {
    ({ work, pki } = await makeWorkspace(tmp, 'nbackup-it-br-', ['agent-a', SPECIAL_AGENT]));
    mainDir = join(work, 'storage-main');
    otherDir = join(work, 'storage-other');
    const serverYaml = join(work, 'server.yaml');
    await writeServerConfig(serverYaml, pki, {
      main: { base_dir: mainDir, max_backups: 2 },
      other: { base_dir: otherDir, max_backups: 5 },
    });
    server = await startServer(serverYaml);
    tree = await makeTree(join(work, 'src'));
    agentYaml = join(work, 'agent.yaml');
    await writeAgentConfig(agentYaml, pki, 'agent-a', server.port, [
      { name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes },
    ]);
  });

  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  /** Restores `archive` with GNU tar into a fresh directory and compares it with the source tree. */
  async function restoresTree(archive: string): Promise<void> {
    await restoreAndCompare(archive, tree, await tmp.make('nbackup-it-restore-'), TAR_TIMEOUTS);
  }

  async function backupOnce(): Promise<AgentResult> {
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.timedOut, false, `agent timed out\n${showRun(r)}`);
    assert.equal(r.code, 0, `agent --once should succeed\n${showRun(r)}`);
    return r;
  }

  const appDir = () => join(mainDir, 'agent-a', 'app');

  it('commits exactly one .tar.gz that GNU tar restores identically, without the excluded paths', async () => {
    await backupOnce();
    const files = await committedBackups(appDir());
    assert.equal(files.length, 1, `expected one committed backup in ${appDir()}, got ${JSON.stringify(files)}`);
    const all = await listFilesRecursive(mainDir);
    assert.deepEqual(all, [`agent-a/app/${files[0]}`, `agent-a/app/${files[0]}.index.gz`, `agent-a/app/${files[0]}.sha256`], 'the storage should hold exactly the one backup file, its index and its SHA-256');
    const archive = join(appDir(), files[0]);

    await restoresTree(archive);

    // Member names: absolute path less the leading "/"; excluded paths absent; near misses kept.
    const prefix = tree.root.replace(/^\/+/, '');
    const members = (await gnuTarList(archive, { timeoutMs: 30_000 })).map((m) => m.replace(/\/$/, ''));
    assert.ok(members.length > 30, `expected many members, got ${members.length}`);
    for (const m of members) {
      assert.ok(!m.startsWith('/'), `member name ${JSON.stringify(m)} is absolute`);
      assert.ok(!m.split('/').includes('..'), `member name ${JSON.stringify(m)} contains ".."`);
      assert.ok(m === prefix || m.startsWith(prefix + '/') || prefix.startsWith(m + '/'), `unexpected member ${JSON.stringify(m)}`);
    }
    const set = new Set(members);
    for (const p of tree.excludedPaths) {
      assert.ok(!set.has(`${prefix}/${p}`), `excluded path ${p} is in the archive`);
    }
    for (const rel of ['keep/app.log.txt', 'sub/deep/keep.txt', '.gitignore', tree.notable.fifo, tree.notable.emptyDir, tree.notable.longPath]) {
      assert.ok(set.has(`${prefix}/${rel}`), `${rel} should be in the archive`);
    }
    assert.ok(!members.some((m) => m.endsWith('.log')), 'no *.log member may be in the archive');
    assert.ok(!members.some((m) => m.split('/').includes('node_modules')), 'nothing under node_modules may be in the archive');
  });

  it('keeps only the newest max_backups (2) after two more runs, and both restore', async () => {
    const first = await committedBackups(appDir());
    assert.equal(first.length, 1, 'precondition: one backup from the previous test');
    await backupOnce();
    const second = await committedBackups(appDir());
    assert.equal(second.length, 2, `after the second run: ${JSON.stringify(second)}`);
    assert.equal(second[0], first[0], 'the first backup is still there after the second run');
    await backupOnce();
    const third = await committedBackups(appDir());
    assert.equal(third.length, 2, `after the third run exactly 2 must remain: ${JSON.stringify(third)}`);
    assert.ok(!third.includes(first[0]), 'the oldest backup must have been rotated away');
    assert.equal(third[0], second[1], 'the second backup is now the oldest kept');
    assert.ok(third[1] > second[1], 'the newest backup sorts after the older ones');
    assert.deepEqual(
      await listFilesRecursive(mainDir),
      third.flatMap((f) => [`agent-a/app/${f}`, `agent-a/app/${f}.index.gz`, `agent-a/app/${f}.sha256`]),
      'nothing but the 2 kept backups and their SHA-256 files (no .tmp, nothing of the rotated one) may be in the storage',
    );
    for (const f of third) await restoresTree(join(appDir(), f));
  });

  it('a failing entry (missing source) fails alone; the other entry still commits', async () => {
    const small = join(work, 'small');
    await mkdir(join(small, 'd'), { recursive: true });
    await writeFile(join(small, 'd', 'f.txt'), 'small file\n');
    const missing = join(work, 'does-not-exist');
    const cfg = join(work, 'agent-mixed.yaml');
    await writeAgentConfig(cfg, pki, 'agent-a', server!.port, [
      { name: 'broken', storage: 'other', sources: [missing] },
      { name: 'good', storage: 'other', sources: [small] },
    ]);
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.timedOut, false, showRun(r));
    assert.notEqual(r.code, 0, `--once must fail when an entry fails\n${showRun(r)}`);
    assert.ok(r.code !== null, showRun(r));
    const lines = stderrLines(r);
    const about = lines.filter((l) => l.includes('broken'));
    assert.equal(about.length, 1, `exactly one stderr line should name the failed entry\n${showRun(r)}`);
    assert.match(about[0], /does not exist/, `the line should say the path does not exist\n${showRun(r)}`);
    assert.ok(about[0].includes(missing), `the line should name the missing path\n${showRun(r)}`);
    assert.ok(!lines.some((l) => /"good"|\bgood\b/.test(l)), `the good entry must not be reported as failed\n${showRun(r)}`);

    const good = await committedBackups(join(otherDir, 'agent-a', 'good'));
    assert.equal(good.length, 1, 'the good entry committed');
    const members = await gnuTarList(join(otherDir, 'agent-a', 'good', good[0]));
    assert.ok(members.includes(`${small.replace(/^\/+/, '')}/d/f.txt`), `archive members: ${JSON.stringify(members)}`);
    assert.deepEqual(await committedBackups(join(otherDir, 'agent-a', 'broken')), [], 'nothing stored for the failed entry');
  });

  it('sources that overlap through a symlink fail the entry before anything is sent, both named', async () => {
    const data = join(work, 'overlap', 'data');
    await mkdir(join(data, 'sub'), { recursive: true });
    await writeFile(join(data, 'sub', 'f.txt'), 'twice?\n');
    const link = join(work, 'overlap', 'link-to-sub');
    await symlink(join(data, 'sub'), link);
    const cfg = join(work, 'agent-overlap.yaml');
    await writeAgentConfig(cfg, pki, 'agent-a', server!.port, [{ name: 'overlap', storage: 'other', sources: [data, link] }]);
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.timedOut, false, showRun(r));
    assert.equal(r.code, 1, showRun(r));
    const about = stderrLines(r).filter((l) => l.includes('overlap'));
    assert.equal(about.length, 1, showRun(r));
    assert.ok(about[0].includes(`source ${link} (a symlink to ${join(data, 'sub')}) is inside source ${data}`), showRun(r));
    assert.deepEqual(await committedBackups(join(otherDir, 'agent-a', 'overlap')), [], 'nothing committed');
    assert.ok(!(await listFilesRecursive(otherDir)).some((f) => f.includes('overlap')), 'not even a temporary file');
    assert.ok(!server!.logs().some((l) => JSON.stringify(l).includes('"overlap"')), 'the server never heard of the entry');
  });

  it('--backup NAME runs only that entry; an unknown NAME fails', async () => {
    const src = join(work, 'only');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'x.txt'), 'x\n');
    const cfg = join(work, 'agent-two.yaml');
    await writeAgentConfig(cfg, pki, 'agent-a', server!.port, [
      { name: 'one', storage: 'other', sources: [src] },
      { name: 'two', storage: 'other', sources: [src] },
    ]);
    const r = await runAgent(['--config', cfg, '--once', '--backup', 'two'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.code, 0, showRun(r));
    assert.equal((await committedBackups(join(otherDir, 'agent-a', 'two'))).length, 1, 'entry "two" committed');
    assert.deepEqual(await committedBackups(join(otherDir, 'agent-a', 'one')), [], 'entry "one" must not have run');

    const bad = await runAgent(['--config', cfg, '--once', '--backup', 'nosuch'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(bad.timedOut, false, showRun(bad));
    assert.notEqual(bad.code, 0, showRun(bad));
    assert.match(bad.stderr, /nosuch/, showRun(bad));
    assert.deepEqual(await committedBackups(join(otherDir, 'agent-a', 'one')), [], 'entry "one" must not have run');
    assert.equal((await committedBackups(join(otherDir, 'agent-a', 'two'))).length, 1, 'entry "two" did not run again');
  });

  it('health prints READY and the free space', async () => {
    const r = await runAgent(['health', `127.0.0.1:${server!.port}`, '--config', agentYaml], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stdout, /^READY free=\S+ \(\d+ bytes\) on storage "\w+" \(reserve \S+\)$/m, showRun(r));
    const m = /(\d+) bytes/.exec(r.stdout) ?? /free[^\d]*(\d+)/i.exec(r.stdout);
    assert.ok(m, `no free-space figure in the output\n${showRun(r)}`);
    const reported = Number(m[1]);
    const st = statfsSync(mainDir);
    const actual = st.bavail * st.bsize;
    assert.ok(reported > 0, `free space must be > 0, got ${reported}`);
    assert.ok(
      Math.abs(reported - actual) < 2 * 1024 ** 3,
      `reported free space ${reported} is far from statfs(${mainDir}) = ${actual}`,
    );
  });

  it('a stream far larger than the resume buffer (1 MiB ring, 20 MiB data) commits, with --progress', async () => {
    const big = join(work, 'big');
    await mkdir(big, { recursive: true });
    const content = randomBytesSeeded(20 * 1024 * 1024 + 17, 99);
    await writeFile(join(big, 'random.bin'), content);
    const cfg = join(work, 'agent-big.yaml');
    const c = agentConfigObject(pki, 'agent-a', server!.port, [{ name: 'big', storage: 'other', sources: [big] }]);
    c.resume = { buffer_size: '1mb', chunk_size: '64kb' };
    await writeYaml(cfg, c);
    const r = await runAgent(['--config', cfg, '--once', '--progress'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.timedOut, false, showRun(r));
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stderr, /big/, `--progress should report on stderr\n${showRun(r)}`);
    const files = await committedBackups(join(otherDir, 'agent-a', 'big'));
    assert.equal(files.length, 1);
    const archive = join(otherDir, 'agent-a', 'big', files[0]);
    const restore = await tmp.make('nbackup-it-restore-');
    await restoreArchive(archive, restore, TAR_TIMEOUTS);
    const restored = await readFile(join(restoredPath(restore, big), 'random.bin'));
    assert.ok(restored.equals(content), 'restored file differs');
  });

  it('--once against a server that is not listening fails promptly, naming the entry', async () => {
    const cfg = join(work, 'agent-down.yaml');
    // Port 1 on loopback: nothing listens there.
    await writeAgentConfig(cfg, pki, 'agent-a', 1, [{ name: 'app', storage: 'main', sources: [tree.root] }]);
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: 20_000 });
    assert.equal(r.timedOut, false, showRun(r));
    assert.ok(r.code !== null && r.code !== 0, showRun(r));
    assert.match(r.stderr, /app/, showRun(r));
  });

  it(`an agent whose valid name contains "+" and "," (CN ${JSON.stringify(SPECIAL_AGENT)}) can back up`, async () => {
    const src = join(work, 'special-src');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'f.txt'), 'f\n');
    const cfg = join(work, 'agent-special.yaml');
    await writeAgentConfig(cfg, pki, SPECIAL_AGENT, server!.port, [{ name: 'app', storage: 'other', sources: [src] }]);
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.code, 0, `agent.name equals the certificate's CN, so the backup must run\n${showRun(r)}`);
    assert.equal((await committedBackups(join(otherDir, SPECIAL_AGENT, 'app'))).length, 1);
  });

  it('an agent killed mid-backup can run that backup again at once (not BUSY for session_ttl)', async () => {
    const killSrc = join(work, 'kill-src');
    await mkdir(killSrc, { recursive: true });
    await writeFile(join(killSrc, 'random.bin'), randomBytesSeeded(40 * 1024 * 1024, 123));
    const cfg = join(work, 'agent-kill.yaml');
    await writeAgentConfig(cfg, pki, 'agent-a', server!.port, [{ name: 'killed', storage: 'other', sources: [killSrc] }]);
    const from = server!.logs().length;
    const victim = spawnLogged(process.execPath, [AGENT_BIN, '--config', cfg, '--once']);
    let session: unknown;
    try {
      ({ session } = await server!.waitForLog((l) => l.msg === 'session started' && l.backup === 'killed', 15_000));
      victim.proc.kill('SIGKILL');
      await victim.waitForExit(5000);
    } finally {
      await victim.stop(1000);
    }
    const committedEarly = server!.logs().slice(from).some((l) => l.msg === 'session committed' && l.backup === 'killed');
    assert.ok(!committedEarly, 'precondition: the agent must be killed before its backup commits');
    assert.deepEqual(await committedBackups(join(otherDir, 'agent-a', 'killed')), []);
    // The server has seen the connection close: the session is detached (or, if the agent died
    // before its mode byte, already discarded).
    await server!.waitForLog(
      (l) => (l.msg === 'connection lost; session kept for resume' || l.msg === 'session discarded') && l.session === session,
      10_000,
    );

    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.code, 0, `the rerun must be able to back up\n${showRun(r)}`);
    const files = await committedBackups(join(otherDir, 'agent-a', 'killed'));
    assert.equal(files.length, 1);
    await gzipTest(join(otherDir, 'agent-a', 'killed', files[0]), { timeoutMs: 30_000 });
  });
});

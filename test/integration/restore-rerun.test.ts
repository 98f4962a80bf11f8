/**
 * `restore --to` stopped part-way, and run again, over real mTLS. SIGTERM or SIGINT removes the
 * file being written and says in one line how far the restore got (exit 143 / 130); the same
 * command then restores the rest. After a kill -9, the run again (without --force) names exactly
 * the file the kill cut short and counts the others as already there. Over a complete restore it
 * exits 0 with no problem line; over a tree whose every file differs it names the first 20 and
 * counts the rest. --force brings the tree back, as the compare helpers and GNU tar --compare see it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { assertTreesEqual } from '../helpers/compare.js';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, spawnLogged, type LoggedProcess } from '../helpers/proc.js';
import { gnuTarCompare } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import type { TreeInfo } from '../helpers/tree.js';
import { waitUntil } from '../helpers/wait.js';
import { committedBackups, makeSource, makeWorkspace, restoredPath, showRun, startEnv, writeAppAgentYaml, type Env } from './harness.js';

const T = { timeoutMs: 60_000 };
const MiB = 1024 * 1024;
/** Six 8 MiB files that do not compress, early in the archive (bulk/ sorts before most): long enough to stop in. */
const BULK = { files: 6, size: 8 * MiB, seed: 23 };

const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** `a/b` as bytes: names need not be UTF-8. */
const under = (dir: string | Buffer, rel: Buffer): Buffer => Buffer.concat([Buffer.from(dir), Buffer.from('/'), rel]);

/** Relative paths (as bytes) of the regular files under `dir`, recursively. */
function filesUnder(dir: Buffer, rel: Buffer | null = null): Buffer[] {
  const out: Buffer[] = [];
  for (const e of fs.readdirSync(dir, { encoding: 'buffer', withFileTypes: true })) {
    const name = e.name as unknown as Buffer;
    const r = rel ? under(rel, name) : name;
    if (e.isDirectory()) out.push(...filesUnder(under(dir, name), r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

describe('restore stopped part-way, and run again', { timeout: 300_000 }, () => {
  const tmp = new TempDirs();
  let pki: Pki;
  let env: Env | undefined;
  let tree: TreeInfo;
  let yaml: string;
  let archive: string;

  const restoreArgs = (to: string, ...more: string[]): string[] => ['restore', '--config', yaml, '--backup', 'app', '--to', to, ...more];
  const top = (into: string): string => restoredPath(into, tree.root);
  const member = (rel: string): string => `${tree.root.slice(1)}/${rel}`;
  const restoredFiles = (into: string): Buffer[] => filesUnder(Buffer.from(top(into)));

  /** The tree is exact (compare helpers), and GNU tar finds every member of the archive as it is. */
  async function exact(into: string): Promise<void> {
    await assertTreesEqual(tree.root, top(into), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });
    await gnuTarCompare(archive, into);
  }

  /** Restored regular files that are not whole: size, or mtime to the second (what tar keeps), unlike their source. */
  function incomplete(into: string): string[] {
    const cut = restoredFiles(into).filter((rel) => {
      const [got, want] = [fs.statSync(under(top(into), rel)), fs.statSync(under(tree.root, rel))];
      return got.size !== want.size || got.mtimeMs !== Math.floor(want.mtimeMs / 1000) * 1000;
    });
    return cut.map((rel) => rel.toString());
  }

  /** Starts `restore --to into` and resolves once it writes the first big file (it is then well short of the end). */
  async function restoreUnderWay(into: string): Promise<LoggedProcess> {
    const p = spawnLogged(process.execPath, [AGENT_BIN, ...restoreArgs(into)]);
    const first = join(top(into), 'bulk', 'r0.bin');
    await waitUntil(() => fs.existsSync(first) || p.proc.exitCode !== null, 30_000, 'the restore to begin bulk/r0.bin', () => p.output().join('\n'));
    assert.equal(p.proc.exitCode, null, `still running\n${p.output().join('\n')}`);
    return p;
  }

  /** Its stderr lines, once both its output streams have ended (bounded). */
  async function stderrOf(p: LoggedProcess): Promise<string[]> {
    await waitUntil(() => p.proc.stdout?.readableEnded === true && p.proc.stderr?.readableEnded === true, 10_000, 'the output to end', () => p.output().join('\n'));
    return p.output().filter((l) => l.startsWith('err| ')).map((l) => l.slice(5));
  }

  before(async () => {
    let work: string;
    ({ work, pki } = await makeWorkspace(tmp, 'nbk-rerun-', ['agent-a']));
    env = await startEnv(tmp, pki, 'nbk-rerun-env-');
    tree = await makeSource(join(work, 'src'), BULK);
    yaml = await writeAppAgentYaml(work, pki, env.server.port, tree);
    const r = await runAgent(['--config', yaml, '--once'], T);
    assert.equal(r.code, 0, showRun(r));
    const dir = join(env.store, 'agent-a', 'app');
    const names = await committedBackups(dir);
    assert.equal(names.length, 1, names.join(', '));
    archive = join(dir, names[0]);
  });

  after(async () => {
    await env?.server.stop();
    await tmp.cleanup();
  });

  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    it(`${signal} mid-restore: the file being written is removed, one line, exit ${code}; the same command then restores the rest (exit 0)`, async () => {
      const into = await tmp.make('nbk-rerun-signal-');
      const p = await restoreUnderWay(into);
      p.proc.kill(signal);
      const ended = await p.waitForExit(10_000);
      const err = await stderrOf(p);
      assert.deepEqual(ended, { code, signal: null }, `exit ${code}, not killed by the signal\n${p.output().join('\n')}`);
      assert.equal(err.length, 1, `one line on stderr, no stack trace\n${err.join('\n')}`);
      const m = new RegExp(`^nbackup-agent: restore interrupted by ${signal}: (\\d+) files restored into ${escapeRe(into)}; (?:(.+), being written, was removed|no file was half-written); the same command restores the rest$`).exec(err[0]);
      assert.ok(m, err[0]);
      if (m[2] !== undefined) {
        assert.ok(m[2].startsWith(member('bulk/')), `the file being written was a big one: ${m[2]}`);
        assert.equal(fs.existsSync(join(into, m[2])), false, `${m[2]} is gone`);
      }
      assert.ok(!fs.existsSync(join(top(into), 'bulk', `r${BULK.files - 1}.bin`)), 'the restore was cut short');
      assert.deepEqual(incomplete(into), [], 'every file left in the target is whole, with its mtime');
      assert.equal(Number(m[1]), restoredFiles(into).length, 'the count is what is in the target');

      const again = await runAgent(restoreArgs(into), T);
      assert.equal(again.code, 0, showRun(again));
      assert.equal(lines(again.stderr).length, 1, showRun(again));
      assert.match(again.stderr, /; \d+ members already there as in the archive, left alone; SHA-256 verified/, showRun(again));
      await exact(into);
    });
  }

  it('killed (kill -9) mid-restore: run again without --force, it names exactly the file cut short and restores the rest; --force makes the tree exact', async () => {
    const into = await tmp.make('nbk-rerun-kill-');
    const p = await restoreUnderWay(into);
    // Frozen while a file is half-written, so that the kill leaves one: each try lets the restore
    // write on until the bytes in the target change (a try may catch it between two files).
    const bytesIn = () => restoredFiles(into).reduce((n, rel) => n + fs.statSync(under(top(into), rel)).size, 0);
    for (let attempt = 0; attempt < 20; attempt++) {
      p.proc.kill('SIGSTOP');
      if (incomplete(into).length > 0) break;
      const seen = bytesIn();
      p.proc.kill('SIGCONT');
      await waitUntil(() => bytesIn() !== seen || p.proc.exitCode !== null, 10_000, 'the restore to write on', () => p.output().join('\n'));
    }
    p.proc.kill('SIGKILL');
    const killed = await p.waitForExit(10_000);
    assert.equal(killed.signal, 'SIGKILL', `killed before it finished\n${p.output().join('\n')}`);
    const cut = incomplete(into);
    assert.equal(cut.length, 1, `one file cut short by the kill: ${cut.join(', ')}`);
    const whole = restoredFiles(into).length - 1;
    assert.ok(!fs.existsSync(join(top(into), 'bulk', `r${BULK.files - 1}.bin`)), 'the restore was cut short');

    const again = await runAgent(restoreArgs(into), T);
    assert.equal(again.code, 1, showRun(again));
    const err = lines(again.stderr);
    const summary = err.pop() ?? '';
    assert.deepEqual(
      err.map((l) => /^nbackup-agent: (.+): not restored: it exists and differs: (?:\d+ bytes?, not \d+|mtime \S+, not \S+) \(--force replaces it\)$/.exec(l)?.[1] ?? l),
      [member(cut[0])],
      `the one file cut short is named, nothing else\n${showRun(again)}`,
    );
    assert.match(summary, new RegExp(`; ${whole} members already there as in the archive, left alone; .*; 1 members NOT restored \\(above\\), of which 1 because what is there differs \\(--force replaces it\\)$`), showRun(again));
    assert.deepEqual(incomplete(into), cut, 'the rest was restored, the file cut short left alone');

    const forced = await runAgent(restoreArgs(into, '--force'), T);
    assert.equal(forced.code, 0, showRun(forced));
    await exact(into);
  });

  it('run again over a complete restore: everything already there, exit 0, no problem line', async () => {
    const into = await tmp.make('nbk-rerun-complete-');
    const first = await runAgent(restoreArgs(into), T);
    assert.equal(first.code, 0, showRun(first));
    const again = await runAgent(restoreArgs(into), T);
    assert.equal(again.code, 0, showRun(again));
    assert.equal(lines(again.stderr).length, 1, showRun(again));
    assert.match(again.stderr, /^restored app .*: 0 files \(0b\), \d+ folders, 0 symlinks, 0 hard links, 0 others; \d+ members already there as in the archive, left alone; SHA-256 verified[^;]*(; its \d+ blocks [^;]*)?\n$/, showRun(again));
    await exact(into);
  });

  it('every file in the way differs: the first 20 named, one line counts the rest, exit 1; --force makes the tree exact', async () => {
    const into = await tmp.make('nbk-rerun-many-');
    const first = await runAgent(restoreArgs(into), T);
    assert.equal(first.code, 0, showRun(first));
    // Every regular file gets a new mtime, as if written by something else (hard links share theirs).
    const files = restoredFiles(into).map((rel) => under(top(into), rel));
    const now = new Date();
    for (const f of files) fs.utimesSync(f, now, now);
    const inodes = new Set(files.map((f) => fs.statSync(f).ino)).size;
    assert.ok(inodes > 20, `${inodes} files`);

    const again = await runAgent(restoreArgs(into), T);
    assert.equal(again.code, 1, showRun(again));
    const err = lines(again.stderr);
    assert.equal(err.length, 22, showRun(again));
    for (const l of err.slice(0, 20)) assert.match(l, /^nbackup-agent: \S.*: not restored: it exists and differs: mtime \S+, not \S+ \(--force replaces it\)$/);
    assert.equal(err[20], `nbackup-agent: … and ${inodes - 20} more members not restored (the first 20 are named above)`);
    assert.match(err[21], new RegExp(`; ${inodes} members NOT restored \\(above\\), of which ${inodes} because what is there differs \\(--force replaces it\\)$`));

    const forced = await runAgent(restoreArgs(into, '--force'), T);
    assert.equal(forced.code, 0, showRun(forced));
    await exact(into);
  });
});

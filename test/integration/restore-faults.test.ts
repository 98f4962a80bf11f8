/**
 * `restore` under faults on the agent's side, over real mTLS: the target's disk fills up, the
 * target cannot be a folder or cannot be written
 * (a file on its way, a read-only mount), things already in the target where members go (a
 * symlink out of it, a FIFO, a folder), and `--stdout` into a pipe whose reader goes away.
 * Small tmpfs mounts stand for the disks (the tests run as root); each is unmounted afterwards.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { assertTreesEqual, sha256File } from '../helpers/compare.js';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, spawnLogged } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import type { TreeInfo } from '../helpers/tree.js';
import { waitUntil } from '../helpers/wait.js';
import { makeSource, makeWorkspace, restoredPath, showRun, startEnv, writeAppAgentYaml, type Env } from './harness.js';

const T = { timeoutMs: 60_000 };
const MiB = 1024 * 1024;
const BULK = { files: 6, size: 8 * MiB, seed: 11 };

const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');

/** Relative paths (as bytes) of the regular files under `dir`, recursively; names need not be UTF-8. */
function filesUnder(dir: Buffer, rel: Buffer | null = null): Buffer[] {
  const out: Buffer[] = [];
  for (const e of fs.readdirSync(dir, { encoding: 'buffer', withFileTypes: true })) {
    const name = e.name as unknown as Buffer;
    const r = rel ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
    const abs = Buffer.concat([dir, Buffer.from('/'), name]);
    if (e.isDirectory()) out.push(...filesUnder(abs, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

describe('restore under faults on the agent side', { timeout: 300_000 }, () => {
  const tmp = new TempDirs();
  const mounts: string[] = [];
  let pki: Pki;
  let env: Env | undefined;
  let tree: TreeInfo;
  let yaml: string;

  /** A tmpfs of `size` bytes on `dir` (read-only once `prepare` has run, if given); unmounted in after(). */
  function mountTmpfs(dir: string, size: number, readOnly?: { prepare: () => void }): void {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'nbackup-test', dir]);
    mounts.push(dir);
    if (!readOnly) return;
    readOnly.prepare();
    execFileSync('mount', ['-o', 'remount,ro', dir]);
  }

  const restoreArgs = (to: string, ...more: string[]): string[] => ['restore', '--config', yaml, '--backup', 'app', '--to', to, ...more];
  const exact = (into: string) => assertTreesEqual(tree.root, restoredPath(into, tree.root), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });

  before(async () => {
    let work: string;
    ({ work, pki } = await makeWorkspace(tmp, 'nbk-faults-', ['agent-a']));
    env = await startEnv(tmp, pki, 'nbk-faults-env-');
    // Six 8 MiB files that do not compress come early in the archive (bulk/ sorts before most).
    tree = await makeSource(join(work, 'src'), BULK);
    yaml = await writeAppAgentYaml(work, pki, env.server.port, tree);
    const r = await runAgent(['--config', yaml, '--once'], T);
    assert.equal(r.code, 0, showRun(r));
  });

  after(async () => {
    for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
    await env?.server.stop();
    await tmp.cleanup();
  });

  it('a target whose disk fills up: exit 1, one line naming the disk and the member, no file left incomplete', async () => {
    const into = await tmp.make('nbk-faults-full-');
    mountTmpfs(into, 12 * MiB);
    const r = await runAgent(restoreArgs(into), T);
    assert.equal(r.code, 1, showRun(r));
    const err = lines(r.stderr);
    assert.equal(err.length, 1, `one line on stderr\n${showRun(r)}`);
    const m = /^nbackup-agent: (.+): no space left on device \(restoring (.+)\); the restore stopped there/.exec(err[0]);
    assert.ok(m, showRun(r));
    assert.equal(m[1], into, 'the line names the target folder');
    const member = m[2];
    assert.ok(member.startsWith(`${tree.root.slice(1)}/bulk/`), `it names the member that did not fit: ${member}`);
    assert.equal(fs.existsSync(join(into, member)), false, 'what was written of that member is gone');
    // Whatever is there is whole: each file equals its source, its final mtime included.
    const left = filesUnder(Buffer.from(restoredPath(into, tree.root)));
    assert.ok(left.some((f) => f.toString() === 'bulk/r0.bin'), 'what fitted was restored');
    for (const rel of left) {
      const got = Buffer.concat([Buffer.from(`${restoredPath(into, tree.root)}/`), rel]);
      const want = Buffer.concat([Buffer.from(`${tree.root}/`), rel]);
      const [g, w] = [fs.statSync(got), fs.statSync(want)];
      assert.equal(g.size, w.size, `${rel.toString()} is whole`);
      assert.equal(Math.floor(g.mtimeMs / 1000), Math.floor(w.mtimeMs / 1000), `${rel.toString()} has its mtime (tar keeps seconds)`);
      assert.equal(await sha256File(got), await sha256File(want), `${rel.toString()} has its content`);
    }
  });

  it('a target that cannot be a folder, or cannot be written: one line naming it, exit 2 or 1 (not 70)', async () => {
    const base = await tmp.make('nbk-faults-target-');
    const file = join(base, 'a-file');
    fs.writeFileSync(file, 'x\n');
    for (const to of [file, join(file, 'sub')]) {
      const r = await runAgent(restoreArgs(to), T);
      assert.equal(r.code, 2, showRun(r));
      assert.deepEqual(lines(r.stderr), [`nbackup-agent: cannot restore into ${to}: ${file} is not a folder`], showRun(r));
    }
    const ro = join(base, 'ro');
    fs.mkdirSync(ro);
    mountTmpfs(ro, MiB, { prepare: () => fs.mkdirSync(join(ro, 'existing')) });
    for (const [to, at] of [[ro, ro], [join(ro, 'existing'), join(ro, 'existing')], [join(ro, 'new', 'deeper'), ro]]) {
      const r = await runAgent(restoreArgs(to), T);
      assert.equal(r.code, 1, showRun(r));
      assert.deepEqual(lines(r.stderr), [`nbackup-agent: cannot restore into ${to}: ${at} cannot be written: read-only file system`], showRun(r));
    }
  });

  it('things in the way: a symlink out of the target is never written through, a FIFO never opened, a folder never replaced; --force replaces all but the folder', async () => {
    const into = await tmp.make('nbk-faults-way-');
    const outside = await tmp.make('nbk-faults-outside-');
    fs.writeFileSync(join(outside, 'victim'), 'untouched\n');
    const top = restoredPath(into, tree.root);
    fs.mkdirSync(top, { recursive: true });
    fs.symlinkSync(join(outside, 'victim'), join(top, tree.notable.text)); // a file member over a symlink to a file outside
    fs.symlinkSync(outside, join(top, 'sizes')); // a folder member over a symlink to a folder outside
    execFileSync('mkfifo', [join(top, tree.notable.dotfile)]); // a file member over a FIFO
    fs.mkdirSync(join(top, tree.notable.random)); // a file member over a folder
    const untouched = () => {
      assert.deepEqual(fs.readdirSync(outside), ['victim'], 'nothing written outside');
      assert.equal(fs.readFileSync(join(outside, 'victim'), 'utf8'), 'untouched\n');
    };

    const r = await runAgent(restoreArgs(into), T);
    assert.equal(r.code, 1, showRun(r));
    untouched();
    const said = (member: string, what: string) => assert.ok(lines(r.stderr).includes(`nbackup-agent: ${tree.root.slice(1)}/${member}: ${what}`), `${member}: ${what}\n${showRun(r)}`);
    said(tree.notable.text, 'not restored: it exists and differs: a symlink, not a file (--force replaces it)');
    said(tree.notable.dotfile, 'not restored: it exists and differs: a FIFO, not a file (--force replaces it)');
    said(tree.notable.random, 'not restored: a folder of that name exists');
    said('sizes', 'not restored: it exists and differs: a symlink, not a folder (--force replaces it)');
    said('sizes/1.bin', `refused: ${tree.root.slice(1)}/sizes is a symlink; nothing is written through it`);
    assert.ok(fs.lstatSync(join(top, tree.notable.dotfile)).isFIFO());

    const forced = await runAgent(restoreArgs(into, '--force'), T);
    assert.equal(forced.code, 1, showRun(forced));
    untouched();
    assert.deepEqual(lines(forced.stderr).slice(0, -1), [`nbackup-agent: ${tree.root.slice(1)}/${tree.notable.random}: not restored: a folder of that name exists`], showRun(forced));
    assert.match(lines(forced.stderr).at(-1) ?? '', /; 1 members NOT restored \(above\)$/);
    // With the folder out of the way, --force brings the tree back exactly.
    fs.rmdirSync(join(top, tree.notable.random));
    const last = await runAgent(restoreArgs(into, '--force'), T);
    assert.equal(last.code, 0, showRun(last));
    await exact(into);
  });

  /** Runs `restore --stdout` in bash with `redirect` after it; resolves with the agent's exit status and stderr. */
  async function stdoutInto(redirect: string): Promise<{ code: number | null; stderr: string }> {
    const agent = [process.execPath, AGENT_BIN, 'restore', '--config', yaml, '--backup', 'app', '--stdout'].map((a) => `'${a}'`).join(' ');
    const sh = spawn('bash', ['-c', `${agent} ${redirect}; exit "\${PIPESTATUS[0]}"`], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: Buffer[] = [];
    sh.stderr.on('data', (c: Buffer) => stderr.push(c));
    const timer = setTimeout(() => sh.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => sh.once('close', (c) => resolve(c)));
    clearTimeout(timer);
    return { code, stderr: Buffer.concat(stderr).toString() };
  }

  it('--stdout into a pipe whose reader goes away (| head -c 100): exit 1, one line, no stack trace', async () => {
    const r = await stdoutInto('| head -c 100 > /dev/null');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^nbackup-agent: stdout was closed by its reader before the end of main\/app\/\S+\.tar\.gz: the archive was not written whole\n$/);
  });

  it('--stdout into a file on a disk that fills up: exit 1, one line', async () => {
    const full = await tmp.make('nbk-faults-stdout-');
    mountTmpfs(full, 4 * MiB);
    const r = await stdoutInto(`> '${full}/app.tar.gz'`);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^nbackup-agent: cannot write main\/app\/\S+\.tar\.gz to stdout: no space left on device; the archive was not written whole\n$/);
  });
});

/**
 * `npm run demo`: the README's first command, run as a newcomer would, on a small tree with a
 * symlink, an empty folder and a non-ASCII name. It must end with a verified restore.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';

const tmp = new TempDirs();
after(() => tmp.cleanup());

test('npm run demo backs a folder up, restores it with tar and finds it identical', { timeout: 90_000 }, async () => {
  const src = join(await tmp.make('nbackup-demo-src-'), 'tree');
  mkdirSync(join(src, 'empty'), { recursive: true });
  mkdirSync(join(src, 'sub'));
  writeFileSync(join(src, 'sub', 'één.txt'), 'unicode name\n');
  writeFileSync(join(src, 'big.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
  symlinkSync('sub/één.txt', join(src, 'link'));
  const r = await promisify(execFile)('npm', ['run', '--silent', 'demo', '--', src], { cwd: REPO_ROOT, timeout: 80_000, maxBuffer: 16 * 1024 * 1024 });
  assert.match(r.stdout, /restored tree identical to /);
  const work = /demo: everything goes under (\S+)/.exec(r.stdout)?.[1];
  assert.ok(work, r.stdout);
  rmSync(work, { recursive: true, force: true }); // the demo leaves it for a newcomer to look at
  assert.match(r.stdout, /pki issue-agent demo/);
});

test('npm run demo with a folder that does not exist says so and exits 2', { timeout: 30_000 }, async () => {
  await assert.rejects(promisify(execFile)('npm', ['run', '--silent', 'demo', '--', '/nonexistent/nbackup-demo'], { cwd: REPO_ROOT, timeout: 25_000 }), (err: { code?: number; stderr?: string }) => {
    assert.equal(err.code, 2);
    assert.match(err.stderr ?? '', /does not exist/);
    return true;
  });
});

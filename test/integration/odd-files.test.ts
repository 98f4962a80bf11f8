/**
 * Reliability, the agent's side, end to end over real mTLS: names that are not UTF-8, a path
 * longer than PATH_MAX, a sparse file and a source that is a symlink all come back from a real
 * backup, checked with GNU tar (name bytes included) and, for the sparse file, with its holes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { assertTreesEqual } from '../helpers/compare.js';
import { allocatedBytes, makeOddTree, type OddTree } from '../helpers/odd-tree.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, writeYaml, type AgentResult } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, makeWorkspace, showRun, startEnv, type Env } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let env: Env;
let tree: OddTree;
let linkSource: string;
let run: AgentResult;
let archive: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-odd-e2e-', ['agent-a']));
  tree = makeOddTree(join(work, 'src'));
  const release = join(work, 'releases', '42');
  fs.mkdirSync(release, { recursive: true });
  fs.writeFileSync(join(release, 'app.conf'), 'setting = 1\n');
  fs.symlinkSync('app.conf', join(release, 'inner-link'));
  linkSource = join(work, 'current');
  fs.symlinkSync(release, linkSource);
  env = await startEnv(tmp, pki, 'nbk-odd-env-');
  const cfg = agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'app', storage: 'main', sources: [tree.root, linkSource] }]);
  const yaml = join(work, 'agent.yaml');
  await writeYaml(yaml, cfg);
  run = await runAgent(['--config', yaml, '--once'], { timeoutMs: 120_000 });
  const files = await committedBackups(join(env.store, 'agent-a', 'app'));
  archive = join(env.store, 'agent-a', 'app', files[0] ?? 'none');
});

after(async () => {
  await env?.server.stop();
  await tmp.cleanup();
});

const member = (p: string): string => p.replace(/^\//, '');

test('the backup commits, with no file skipped and one notice for the symlink source', () => {
  assert.equal(run.code, 0, showRun(run));
  const warnings = run.logs.filter((l) => l.level === 40);
  assert.deepEqual(warnings, [], 'no warning: nothing was left out');
  const committed = run.logs.find((l) => l.msg === 'backup committed');
  assert.ok(committed && Number(committed.warnings) === 0, showRun(run));
  assert.ok(run.logs.some((l) => l.level === 30 && /source is a symlink to/.test(String(l.msg))), 'the symlink source is announced');
  assert.ok(fs.statSync(archive).size < 8 * 1024 * 1024, `the archive is ${fs.statSync(archive).size} bytes: the sparse file's holes were not stored`);
});

test('GNU tar restores names that are not UTF-8 byte for byte (everything but the deep chain)', async () => {
  const out = join(work, 'restore');
  fs.mkdirSync(out);
  execFileSync('tar', ['-xzpf', archive, '-C', out, '--exclude=deep'], { env: { ...process.env, LC_ALL: 'C' } });
  await assertTreesEqual(tree.root, join(out, member(tree.root)), { excludedPaths: ['deep'] });
});

test('the path beyond PATH_MAX is in the archive whole, and its subtree restores exactly', async () => {
  const names = execFileSync('tar', ['-tzf', archive], { maxBuffer: 64 << 20 }).toString('latin1').split('\n');
  const deep = `${member(tree.root)}/${tree.deepFile}`;
  assert.ok(deep.length > 4096 && names.includes(deep), `a ${deep.length}-byte member name`);
  const out = join(work, 'deep-restore');
  fs.mkdirSync(out);
  const keep = 10;
  execFileSync('tar', ['-xzpf', archive, '-C', out, `--strip-components=${member(tree.root).split('/').length + 1 + keep}`, member(tree.root) + '/deep']);
  await assertTreesEqual(join(tree.root, 'deep', ...tree.deepDirs.slice(0, keep)), out);
});

test('the sparse file restores with its holes (allocated bytes far below its size) and the same bytes', () => {
  const out = join(work, 'sparse-restore');
  fs.mkdirSync(out);
  execFileSync('tar', ['-xzpf', archive, '-C', out, `${member(tree.root)}/${tree.sparse.rel}`]);
  const restored = join(out, member(tree.root), tree.sparse.rel);
  assert.equal(fs.statSync(restored).size, tree.sparse.size);
  assert.ok(allocatedBytes(restored) < 8 * 1024 * 1024, `the restored file uses ${allocatedBytes(restored)} bytes for ${tree.sparse.size}`);
  execFileSync('cmp', [join(tree.root, tree.sparse.rel), restored]);
});

test('the symlink source comes back as the directory it pointed to, links inside still links', () => {
  const out = join(work, 'link-restore');
  fs.mkdirSync(out);
  execFileSync('tar', ['-xzpf', archive, '-C', out, member(linkSource)]);
  const restored = join(out, member(linkSource));
  assert.ok(fs.lstatSync(restored).isDirectory());
  assert.equal(fs.readFileSync(join(restored, 'app.conf'), 'utf8'), 'setting = 1\n');
  assert.equal(fs.readlinkSync(join(restored, 'inner-link')), 'app.conf');
});

test('what the walk leaves out counts: a socket is one warning in the summary and one stderr line, and the backup commits', async () => {
  const src = join(work, 'with-socket');
  fs.mkdirSync(src);
  fs.writeFileSync(join(src, 'keep.txt'), 'kept\n');
  const listener = net.createServer().listen(join(src, 'app.sock'));
  await once(listener, 'listening');
  try {
    const yaml = join(work, 'agent-socket.yaml');
    await writeYaml(yaml, agentConfigObject(pki, 'agent-a', env.server.port, [{ name: 'sock', storage: 'main', sources: [src] }]));
    const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, showRun(r));
    const warned = r.logs.filter((l) => l.level === 40);
    assert.equal(warned.length, 1, showRun(r));
    assert.match(JSON.stringify(warned[0]), /app\.sock.*is a socket/);
    const committed = r.logs.find((l) => l.msg === 'backup committed');
    assert.equal(Number(committed?.warnings), 1, `the scanner's warning is in the total\n${showRun(r)}`);
    assert.match(r.stderr, /backup "sock" committed with 1 warning; the log names each path/, showRun(r));
  } finally {
    listener.close();
  }
});

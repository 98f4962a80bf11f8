import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import crypto from 'node:crypto';
import { Storage } from '../../src/server/storage.js';

const sha = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-storage-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

function storage(maxBackups = 3): Storage {
  const base = path.join(root, `s${n++}`);
  return new Storage('main', { base_dir: base, keep: { last: maxBackups, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 }, min_free: 0, assembler_pending_mem_limit: 1 << 20 });
}

/** A temporary file holding `data` followed by 44 bytes standing in for the trailer. */
async function tempWith(s: Storage, id: string, data: Buffer) {
  const temp = await s.createTemp('agent-a', 'daily', id);
  fs.writeSync(temp.fd, Buffer.concat([data, Buffer.alloc(44, 0xee)]));
  return temp;
}

const NAME = /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}\.tar\.gz$/;

test('a temporary file is hidden, exclusive, private to the server and inside base_dir/agent/backup', async () => {
  const s = storage();
  const temp = await s.createTemp('agent-a', 'daily', 'id-1');
  assert.equal(temp.path, path.join(s.baseDir, 'agent-a', 'daily', '.id-1.tar.gz.tmp'));
  assert.equal(fs.statSync(temp.path).mode & 0o777, 0o640);
  await assert.rejects(s.createTemp('agent-a', 'daily', 'id-1'), /EEXIST/);
  assert.deepEqual(await s.tempFiles(), [temp.path]);
  await s.removeTemp(temp);
  assert.equal(temp.fd, -1);
  assert.equal(fs.existsSync(temp.path), false);
});

test('names that would lead outside base_dir are refused before anything is created', async () => {
  const s = storage();
  for (const [agent, backup] of [
    ['..', 'x'],
    ['a', '..'],
    ['.hidden', 'x'],
    ['a/b', 'x'],
    ['a', 'b\\c'],
    ['', 'x'],
    ['a', 'nul\0'],
  ]) {
    await assert.rejects(s.createTemp(agent, backup, 'id'), (err: Error & { kind?: string }) => err.kind === 'rejected', `${agent}/${backup}`);
  }
  assert.equal(fs.existsSync(s.baseDir), false, 'nothing was created');
  assert.deepEqual(fs.readdirSync(root).filter((f) => !f.startsWith('s')), [], 'nothing appeared beside the storages');
});

test('commit cuts the trailer off, names the file by its UTC commit time and removes the temporary name', async () => {
  const s = storage();
  const data = Buffer.from('compressed bytes');
  const temp = await tempWith(s, 'id-2', data);
  const when = Date.parse('2026-02-11T02:00:00.123Z');
  const { file, removed } = await s.commit(temp, data.length, sha(data), when);
  assert.equal(path.basename(file), '2026-02-11T02-00-00-123.tar.gz');
  assert.ok(fs.readFileSync(file).equals(data), 'exactly the data, without the trailer');
  assert.equal(temp.fd, -1, 'the descriptor was closed');
  assert.equal(fs.existsSync(temp.path), false);
  assert.deepEqual(removed, []);
  // The SHA-256 lies beside it in sha256sum's format, and sha256sum agrees.
  assert.equal(fs.readFileSync(`${file}.sha256`, 'utf8'), `${sha(data)}  2026-02-11T02-00-00-123.tar.gz\n`);
  await new Promise<void>((resolve, reject) => execFile('sha256sum', ['-c', `${path.basename(file)}.sha256`], { cwd: path.dirname(file) }, (err) => (err ? reject(err) : resolve())));
  // A second commit in the same millisecond does not overwrite the first.
  const again = await s.commit(await tempWith(s, 'id-3', data), data.length, sha(data), when);
  assert.equal(path.basename(again.file), '2026-02-11T02-00-00-124.tar.gz');
  assert.equal(fs.readdirSync(path.dirname(file)).filter((f) => NAME.test(f)).length, 2);
});

test('rotation keeps the newest max_backups archives and leaves every other file alone', async () => {
  const s = storage(2);
  const dir = s.backupDir('agent-a', 'daily');
  const files: string[] = [];
  for (let i = 0; i < 4; i++) {
    const temp = await tempWith(s, `r${i}`, Buffer.from(`backup ${i}`));
    if (i === 0) {
      // Files that are not archives of this backup must survive rotation.
      fs.writeFileSync(path.join(dir, 'README'), 'operator notes');
      fs.writeFileSync(path.join(dir, '.other-session.tar.gz.tmp'), 'in progress');
    }
    const { file, removed } = await s.commit(temp, 8, sha(`backup ${i}`), Date.UTC(2026, 0, 1 + i));
    files.push(file);
    assert.deepEqual(removed, i < 2 ? [] : [files[i - 2]]);
  }
  const left = fs.readdirSync(dir).sort();
  const kept = [files[2], files[3]].flatMap((f) => [path.basename(f), `${path.basename(f)}.sha256`]);
  assert.deepEqual(left, ['.other-session.tar.gz.tmp', ...kept, 'README'].sort(), 'archives go with their sidecars');
  assert.ok(left.filter((f) => NAME.test(f)).length === 2);
});

test('a clock set back never names a new archive before the newest, and rotation never removes it', async () => {
  const s = storage(2);
  const day = (d: number) => Date.UTC(2026, 5, d, 12);
  await s.commit(await tempWith(s, 'c1', Buffer.from('one')), 3, sha('one'), day(10));
  await s.commit(await tempWith(s, 'c2', Buffer.from('two')), 3, sha('two'), day(11));
  // The clock is now a year behind the newest archive.
  const behind = Date.UTC(2025, 5, 11, 12);
  const { file, removed, clockBehindMs } = await s.commit(await tempWith(s, 'c3', Buffer.from('three')), 5, sha('three'), behind);
  assert.equal(path.basename(file), '2026-06-11T12-00-00-001.tar.gz', 'named just after the newest archive');
  assert.equal(clockBehindMs, day(11) - behind);
  assert.deepEqual(removed.map((f) => path.basename(f)), ['2026-06-10T12-00-00-000.tar.gz']);
  assert.equal(fs.readFileSync(file, 'utf8'), 'three', 'the archive just committed is kept');
  const names = fs.readdirSync(path.dirname(file)).filter((f) => NAME.test(f)).sort();
  assert.equal(names[names.length - 1], path.basename(file), 'and sorts last');
});

test('the orphan sweep finds temporary files of every agent and backup, and never follows symlinks', async () => {
  const s = storage();
  const a = await s.createTemp('agent-a', 'daily', 'x');
  const b = await s.createTemp('agent-b', 'weekly', 'y');
  const outside = fs.mkdtempSync(path.join(root, 'outside-'));
  fs.writeFileSync(path.join(outside, '.z.tar.gz.tmp'), 'not ours');
  fs.symlinkSync(outside, path.join(s.baseDir, 'agent-a', 'linked'));
  assert.deepEqual((await s.tempFiles()).sort(), [a.path, b.path].sort());
  await s.removeTemp(a);
  await s.removeTemp(b);
  assert.ok(await s.freeBytes() > 0);
});

/**
 * The durability order, seen by the kernel: the data is fsynced before the file gets its name,
 * and the directory is fsynced after the rename. Traced with strace on a real commit.
 */
test('commit fsyncs the file before linking it into place, then fsyncs the directory (strace)', async (t) => {
  const strace = ['/usr/bin/strace', '/bin/strace'].find((p) => fs.existsSync(p));
  assert.ok(strace, 'strace is required (apt-get install strace: the README lists it)');
  const storageJs = fileURLToPath(new URL('../../src/server/storage.js', import.meta.url));
  const base = path.join(root, 'traced');
  const script = `
    import fs from 'node:fs';
    const { Storage } = await import(${JSON.stringify(storageJs)});
    const s = new Storage('t', { base_dir: ${JSON.stringify(base)}, keep: { last: 5, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 }, min_free: 0, assembler_pending_mem_limit: 1 });
    const temp = await s.createTemp('agent', 'backup', 'traced');
    fs.writeSync(temp.fd, Buffer.alloc(100 + 44, 1));
    process.stdout.write((await s.commit(temp, 100, '0'.repeat(64))).file);
  `;
  const log = path.join(root, 'strace.log');
  const out = await new Promise<string>((resolve, reject) =>
    execFile(strace, ['-f', '-qq', '-y', '-e', 'trace=ftruncate,fsync,fdatasync,link,linkat,rename,renameat,renameat2,unlink,unlinkat', '-o', log, process.execPath, '--input-type=module', '-e', script], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const dir = path.join(base, 'agent', 'backup');
  const calls = fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l.includes(dir))
    .map((l) => l.replace(/^\d+\s+/, ''));
  t.diagnostic(calls.join('\n'));
  const at = (re: RegExp): number => calls.findIndex((l) => re.test(l));
  const truncate = at(/^ftruncate\(\d+<[^>]*\.traced\.tar\.gz\.tmp>, 100\)/);
  const fsyncFile = at(/^f(data)?sync\(\d+<[^>]*\.traced\.tar\.gz\.tmp>\)/);
  const link = at(/^link(at)?\(.*\.traced\.tar\.gz\.tmp".*\d{3}\.tar\.gz"/);
  const unlink = at(/^unlink(at)?\(.*\.traced\.tar\.gz\.tmp"/);
  const fsyncDir = at(new RegExp(`^fsync\\(\\d+<${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}>\\)`));
  assert.ok(truncate >= 0 && fsyncFile >= 0 && link >= 0 && unlink >= 0 && fsyncDir >= 0, `missing calls in:\n${calls.join('\n')}`);
  assert.ok(truncate < fsyncFile && fsyncFile < link && link < unlink && unlink < fsyncDir, `wrong order:\n${calls.join('\n')}`);
  assert.equal(path.dirname(out), dir);
});

/**
 * Temporary directories for tests. Everything lives under os.tmpdir(); nothing is shared between
 * calls, so tests may run concurrently.
 */
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Creates a fresh, empty directory `<os.tmpdir()>/<prefix>XXXXXX` and returns its absolute path. */
export async function makeTempDir(prefix = 'nbackup-test-'): Promise<string> {
  const safe = prefix.replace(/[/\\]/g, '_');
  return mkdtemp(join(tmpdir(), safe));
}

/**
 * Removes a directory tree, best effort but thorough: if removal fails because of permissions
 * (e.g. a 0500 directory when not running as root), it makes every directory writable and retries.
 * Never throws for a path that does not exist.
 */
export async function removeTempDir(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Paths longer than PATH_MAX: rm(1) walks them with directory handles.
    if (code === 'ENAMETOOLONG') return removeWithRm(dir);
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOTEMPTY') throw err;
    await makeWritable(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  }
}

function removeWithRm(dir: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('rm', ['-rf', '--', dir], (err) => (err ? reject(err) : resolve())));
}

async function makeWritable(dir: string): Promise<void> {
  let st;
  try {
    st = await lstat(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  await chmod(dir, 0o700).catch(() => undefined);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) await makeWritable(join(dir, name));
}

/** Runs `fn` with a fresh temporary directory that is removed afterwards (even if `fn` throws). */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await makeTempDir(prefix);
  try {
    return await fn(dir);
  } finally {
    await removeTempDir(dir);
  }
}

/**
 * Collects temporary directories made during a test file and removes them all at once, e.g.
 *
 *   const tmp = new TempDirs();
 *   after(() => tmp.cleanup());
 *   const dir = await tmp.make('restore-');
 *
 * Set NBACKUP_KEEP_TMP=1 to keep them for inspection (their paths are printed to stderr).
 */
export class TempDirs {
  private readonly dirs: string[] = [];

  async make(prefix = 'nbackup-test-'): Promise<string> {
    const dir = await makeTempDir(prefix);
    this.dirs.push(dir);
    return dir;
  }

  async cleanup(): Promise<void> {
    const dirs = this.dirs.splice(0);
    if (process.env.NBACKUP_KEEP_TMP === '1') {
      for (const d of dirs) process.stderr.write(`kept temp dir: ${d}\n`);
      return;
    }
    await Promise.all(dirs.map((d) => removeTempDir(d)));
  }
}

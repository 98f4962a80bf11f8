import fs from 'node:fs';
import path from 'node:path';
import { nameProblem } from '../../protocol/names.js';
import type { ArchiveFormat, StorageConfig } from '../config/index.js';
import { NbackupError, errnoCode, errorMessage } from '../errors.js';
import { ARCHIVE_EXTENSION, archiveName, archiveTime, nextArchiveTime } from '../archive/names.js';
import { dirEntries, orphanSidecars, removeArchive, shaLine, SHA_SUFFIX, writeFileAtomic } from './catalog.js';
import { selectRetention, type RetentionDecision } from './retention.js';
import { fsyncDir } from './file-io.js';
import { sessionFiles } from './session-record.js';
import { SpaceGuard } from './space-guard.js';

/**
 * One named storage: where an agent's backups land, how many are kept, and how much free space
 * must remain. Paths are built only from names that passed the protocol's name rules, and are
 * checked once more to lie inside `base_dir` before anything is created.
 *
 * Files: `<base_dir>/<agent>/<backup>/<timestamp>.tar.gz`, written first as a hidden temporary
 * file in the same directory so that the final rename is atomic.
 */
/** A session's temporary file: where it is and the open descriptor it is written through. */
export interface TempFile {
  path: string;
  fd: number;
}

const TEMP_SUFFIX = '.tmp';

export class Storage {
  readonly baseDir: string;
  /** What every write of a session into this storage draws from. */
  readonly space: SpaceGuard;

  constructor(
    readonly name: string,
    readonly config: StorageConfig,
  ) {
    this.baseDir = path.resolve(config.base_dir);
    this.space = new SpaceGuard(name, config.min_free, () => this.freeBytes());
  }

  /** The directory of one agent's backup; throws if the names would lead anywhere else. */
  backupDir(agent: string, backup: string): string {
    for (const [what, value] of [
      ['agent', agent],
      ['backup', backup],
    ] as const) {
      const problem = nameProblem(value);
      if (problem) throw new NbackupError('rejected', `${what} name ${JSON.stringify(value)} ${problem}`);
    }
    const dir = path.resolve(this.baseDir, agent, backup);
    if (!dir.startsWith(this.baseDir + path.sep)) {
      throw new NbackupError('rejected', `backup directory ${dir} would lie outside ${this.baseDir}`);
    }
    return dir;
  }

  /**
   * Checks that `base_dir` is (or can be made) a directory the server can write in, by creating
   * and removing a probe file. Run at start-up: an unusable storage stops the server there.
   */
  async check(): Promise<void> {
    const fail = (why: string): NbackupError => new NbackupError('storage', `storage "${this.name}": base_dir ${this.baseDir} cannot be used: ${why}`);
    try {
      await fs.promises.mkdir(this.baseDir, { recursive: true, mode: 0o750 });
    } catch (err) {
      throw fail(errnoCode(err) === 'EEXIST' || errnoCode(err) === 'ENOTDIR' ? 'it (or a folder above it) is not a directory' : errorMessage(err));
    }
    const st = await fs.promises.stat(this.baseDir);
    if (!st.isDirectory()) throw fail('it is not a directory');
    const probe = path.join(this.baseDir, `.nbackup-probe-${process.pid}${TEMP_SUFFIX}`);
    try {
      const fh = await fs.promises.open(probe, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      try {
        await fh.write(Buffer.from('probe'));
      } finally {
        await fh.close();
      }
      await fs.promises.unlink(probe);
    } catch (err) {
      throw fail(`a file cannot be written in it (${errorMessage(err)})`);
    }
  }

  async freeBytes(): Promise<number> {
    try {
      await fs.promises.mkdir(this.baseDir, { recursive: true });
      const st = await fs.promises.statfs(this.baseDir);
      return st.bavail * st.bsize;
    } catch (err) {
      throw new NbackupError('storage', `cannot read free space of ${this.baseDir}: ${errorMessage(err)}`);
    }
  }

  /** Creates the temporary file for a new session and returns its path and descriptor. */
  async createTemp(agent: string, backup: string, sessionId: string, format: ArchiveFormat = 'gzip'): Promise<TempFile> {
    const dir = this.backupDir(agent, backup);
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o750 });
    const tmp = path.join(dir, `.${sessionId}.${ARCHIVE_EXTENSION[format]}${TEMP_SUFFIX}`);
    const fd = await new Promise<number>((resolve, reject) =>
      fs.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o640, (err, fd) =>
        err ? reject(err) : resolve(fd),
      ),
    );
    return { path: tmp, fd };
  }

  /**
   * Makes a verified temporary file a backup: cut it to the data size (the trailer is not part of
   * the archive), fsync, close, link it to its timestamp name, remove the temporary name, fsync the
   * directory, then rotate. `temp.fd` is -1 from the moment the descriptor is closed.
   *
   * The SHA-256 goes beside it (`<archive>.sha256`, catalog.ts) before the temporary name is removed.
   * The name is the commit time, or just after the newest archive when the clock is behind it
   * (`clockBehindMs` then says by how much), so names sort in commit order; and rotation never
   * removes the archive just committed.
   */
  async commit(temp: TempFile, dataSize: number, sha256Hex: string, now = Date.now()): Promise<{ file: string; removed: string[]; clockBehindMs: number }> {
    const format: ArchiveFormat = temp.path.endsWith(`.${ARCHIVE_EXTENSION.zstd}${TEMP_SUFFIX}`) ? 'zstd' : 'gzip';
    const dir = path.dirname(temp.path);
    await new Promise<void>((resolve, reject) => fs.ftruncate(temp.fd, dataSize, (err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => fs.fsync(temp.fd, (err) => (err ? reject(err) : resolve())));
    const fd = temp.fd;
    temp.fd = -1;
    await new Promise<void>((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
    const { at, behindMs } = nextArchiveTime(await fs.promises.readdir(dir), now);
    let final = '';
    // Two sessions of one agent/backup cannot overlap (BUSY), but be safe against same-millisecond names.
    for (let i = 0, when = at; i < 1000; i++, when++) {
      final = path.join(dir, archiveName(when, format));
      try {
        await fs.promises.link(temp.path, final);
        break;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
        final = '';
      }
    }
    if (!final) throw new NbackupError('storage', `no free backup name in ${dir}`);
    await writeFileAtomic(dir, path.basename(final) + SHA_SUFFIX, shaLine(final, sha256Hex));
    await fs.promises.unlink(temp.path);
    await fsyncDir(dir);
    const removed = await this.rotate(dir, path.basename(final));
    return { file: final, removed, clockBehindMs: behindMs };
  }

  /** Closes (if still open) and deletes a temporary file that will not be committed, and the files beside it. */
  async removeTemp(temp: TempFile): Promise<void> {
    if (temp.fd >= 0) {
      const fd = temp.fd;
      temp.fd = -1;
      await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
    }
    for (const file of Object.values(sessionFiles(temp.path))) await fs.promises.rm(file, { force: true });
  }

  /** What the storage's `keep` policy decides for the archives in `dir` (retention.ts), newest first. */
  async retention(dir: string): Promise<RetentionDecision[]> {
    const archives = (await dirEntries(dir)).flatMap((name) => {
      const time = archiveTime(name);
      return time === null ? [] : [{ name, time }];
    });
    return selectRetention(archives, this.config.keep);
  }

  /**
   * Applies the `keep` policy in `dir`: deletes the archives (and their sidecars) no rule keeps,
   * never `keep` (the archive just committed), and sidecars left without their archive.
   */
  async rotate(dir: string, keep: string): Promise<string[]> {
    const excess = (await this.retention(dir)).filter((d) => !d.keep && d.name !== keep).map((d) => d.name);
    for (const n of excess) await removeArchive(path.join(dir, n));
    for (const n of orphanSidecars(await fs.promises.readdir(dir))) await fs.promises.rm(path.join(dir, n), { force: true });
    if (excess.length > 0) await fsyncDir(dir);
    return excess.map((n) => path.join(dir, n));
  }

  /** Every session's files under this storage: `<base>/<agent>/<backup>/.*.tmp`. */
  async tempFiles(): Promise<string[]> {
    const out: string[] = [];
    const agents = await dirEntries(this.baseDir);
    for (const a of agents) {
      const backups = await dirEntries(path.join(this.baseDir, a));
      for (const b of backups) {
        for (const f of await dirEntries(path.join(this.baseDir, a, b))) {
          if (f.startsWith('.') && f.endsWith(TEMP_SUFFIX)) out.push(path.join(this.baseDir, a, b, f));
        }
      }
    }
    return out;
  }
}

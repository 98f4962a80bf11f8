import fs from 'node:fs';
import path from 'node:path';
import { nameProblem } from '../../protocol/names.js';
import type { ArchiveFormat, StorageConfig } from '../config/index.js';
import { NbackupError, errnoCode, errorMessage } from '../errors.js';
import { ARCHIVE_EXTENSION, archiveName, archiveTime, isArchiveName, nextArchiveTime } from '../archive/names.js';
import { archivesIn, backupFolders, folderEntries, orphanSidecars, removeArchive, shaLine, SHA_SUFFIX, writeFileAtomic } from './catalog.js';
import { selectRetention, type RetentionDecision } from './retention.js';
import { fsyncDir } from './file-io.js';
import { sessionFiles } from './session-record.js';
import { SpaceGuard } from './space-guard.js';
import { entryKind, OddEntries, OddEntryError, realFolder, removeFileEntry, SAFE_OPEN } from './storage-entries.js';

/**
 * One named storage: where an agent's backups land, how many are kept, and how much free space
 * must remain. Paths are built only from names that passed the protocol's name rules, and are
 * checked once more to lie inside `base_dir` before anything is created.
 *
 * Files: `<base_dir>/<agent>/<backup>/<timestamp>.tar.gz`, written first as a hidden temporary
 * file in the same directory so that the final rename is atomic. The agent and backup folders must
 * be real folders: the server writes, renames and deletes through no symlink (storage-entries.ts).
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
    this.backupDir(agent, backup); // the names' rules
    const dir = await realFolder(this.baseDir, [agent, backup], { create: true });
    const tmp = path.join(dir, `.${sessionId}.${ARCHIVE_EXTENSION[format]}${TEMP_SUFFIX}`);
    const fd = await new Promise<number>((resolve, reject) =>
      fs.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | SAFE_OPEN, 0o640, (err, fd) =>
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
  async commit(temp: TempFile, dataSize: number, sha256Hex: string, now = Date.now()): Promise<Committed> {
    const format: ArchiveFormat = temp.path.endsWith(`.${ARCHIVE_EXTENSION.zstd}${TEMP_SUFFIX}`) ? 'zstd' : 'gzip';
    const dir = path.dirname(temp.path);
    await new Promise<void>((resolve, reject) => fs.ftruncate(temp.fd, dataSize, (err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => fs.fsync(temp.fd, (err) => (err ? reject(err) : resolve())));
    const fd = temp.fd;
    temp.fd = -1;
    await new Promise<void>((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
    // The folder may have been swapped for a symlink since the session began: link nothing through it.
    await this.checkFolder(dir);
    const { at, behindMs } = nextArchiveTime(await archivesIn(dir), now);
    let final = '';
    // Two sessions of one agent/backup cannot overlap (BUSY), but be safe against same-millisecond names.
    for (let i = 0, when = at; i < 1000; i++, when++) {
      final = path.join(dir, archiveName(when, format));
      if (!isArchiveName(path.basename(final))) {
        throw new NbackupError('storage', `no archive name is left after the newest archive in ${dir} (past the year 9999); remove or rename that archive`);
      }
      try {
        await fs.promises.link(temp.path, final);
        break;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
        final = '';
      }
    }
    if (!final) throw new NbackupError('storage', `no free backup name in ${dir}`);
    try {
      await writeFileAtomic(dir, path.basename(final) + SHA_SUFFIX, shaLine(final, sha256Hex));
      await fs.promises.unlink(temp.path);
      await fsyncDir(dir);
    } catch (err) {
      // Not committed after all (no room for the sidecar, an I/O error): the archive's name goes
      // again, so the session fails whole and no archive stands without its SHA-256 beside it.
      await fs.promises.unlink(final).catch(() => undefined);
      await fs.promises.rm(final + SHA_SUFFIX, { force: true }).catch(() => undefined);
      throw new NbackupError('storage', `the archive could not be committed: ${errorMessage(err)}`, { cause: err });
    }
    // The archive is committed now: a retention that fails is reported, it does not undo that.
    let rotation: Rotation;
    try {
      rotation = await this.rotate(dir, path.basename(final));
    } catch (err) {
      rotation = { removed: [], odd: new OddEntries(), failed: errorMessage(err) };
    }
    return { file: final, clockBehindMs: behindMs, ...rotation };
  }

  /** Closes (if still open) and deletes a temporary file that will not be committed, and the files beside it. */
  async removeTemp(temp: TempFile): Promise<void> {
    if (temp.fd >= 0) {
      const fd = temp.fd;
      temp.fd = -1;
      await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
    }
    // A folder swapped for a symlink meanwhile: remove nothing through it (a restart sweeps the rest).
    if (!(await this.checkFolder(path.dirname(temp.path)).then(() => true, () => false))) return;
    for (const file of Object.values(sessionFiles(temp.path))) {
      await removeFileEntry(file).catch((err: unknown) => {
        if (!(err instanceof OddEntryError)) throw err; // a folder planted under a session's name stays
      });
    }
  }

  /** Throws unless `dir` (in this storage) is a real folder, every step below `base_dir` no symlink. */
  async checkFolder(dir: string): Promise<void> {
    const rel = path.relative(this.baseDir, dir);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) throw new NbackupError('storage', `${dir} is not a folder of ${this.baseDir}`);
    await realFolder(this.baseDir, rel.split(path.sep));
  }

  /**
   * What the storage's `keep` policy decides for the archives in `dir` (retention.ts), newest
   * first. Only regular files with an archive name count; anything else named like one goes to `odd`.
   */
  async retention(dir: string, odd?: OddEntries): Promise<RetentionDecision[]> {
    const archives = (await archivesIn(dir, odd)).flatMap((name) => {
      const time = archiveTime(name);
      return time === null ? [] : [{ name, time }];
    });
    return selectRetention(archives, this.config.keep);
  }

  /**
   * Applies the `keep` policy in `dir`: deletes the archives (and their sidecars) no rule keeps,
   * never `keep` (the archive just committed), and sidecars left without their archive. It deletes
   * only regular files (and symlinked sidecars, the links themselves), in a real folder of this
   * storage; whatever it leaves is in `odd`.
   */
  async rotate(dir: string, keep: string): Promise<Rotation> {
    await this.checkFolder(dir);
    const odd = new OddEntries();
    const excess = (await this.retention(dir, odd)).filter((d) => !d.keep && d.name !== keep).map((d) => d.name);
    const removed: string[] = [];
    for (const n of excess) {
      try {
        await removeArchive(path.join(dir, n));
        removed.push(path.join(dir, n));
      } catch (err) {
        odd.addError(err);
      }
    }
    for (const n of orphanSidecars(await folderEntries(dir))) {
      await fs.promises.rm(path.join(dir, n), { force: true });
    }
    if (removed.length > 0) await fsyncDir(dir);
    return { removed, odd };
  }

  /**
   * Every session's files under this storage: `<base>/<agent>/<backup>/.*.tmp`, files and symlinks
   * (a link is removed as itself), in real folders only. Anything else with such a name, and every
   * symlinked folder, goes to `odd`.
   */
  async tempFiles(odd: OddEntries = new OddEntries()): Promise<string[]> {
    const out: string[] = [];
    for (const { dir } of await backupFolders(this, undefined, undefined, odd)) {
      for (const e of await folderEntries(dir)) {
        if (!e.name.startsWith('.') || !e.name.endsWith(TEMP_SUFFIX)) continue;
        if (e.isFile() || e.isSymbolicLink()) out.push(path.join(dir, e.name));
        else odd.add(path.join(dir, e.name), `is ${entryKind(e)}, not a file the server made; left alone`);
      }
    }
    return out;
  }
}

/** What a rotation did: the archives it deleted, what it left alone, and why it stopped, if it did. */
export interface Rotation {
  removed: string[];
  odd: OddEntries;
  failed?: string;
}

/** A commit's outcome: the archive, how far the clock was behind its name, and the rotation after it. */
export interface Committed extends Rotation {
  file: string;
  clockBehindMs: number;
}

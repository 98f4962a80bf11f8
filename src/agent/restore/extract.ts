import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';
import { printableName } from '../../printable.js';
import { howItDiffers, type Wanted } from './existing-entry.js';
import { realName, splitName, unsafeName } from './member-name.js';
import { writeSparse } from './sparse-write.js';
import { diskFault, openTarget } from './target.js';
import type { TarMember, TarReader } from '../../archive/tar-reader.js';

/**
 * Writes tar members under one folder and nowhere else. A member is refused, with a message, when
 * its name is absolute or has a `..` component, or when any folder on its way (or a hard link's
 * target's way) is not a real directory — a symlink made by an earlier member or found in the
 * folder is never followed. Files are created O_EXCL|O_NOFOLLOW; an existing entry is replaced
 * only with `force` (never a folder). Without it, an entry that already is what the member would
 * make (existing-entry.ts: a file of its size and mtime, …) is counted and left alone, and one
 * that differs is reported, saying how. A file whose writing fails, or is abandoned at a signal,
 * is removed, so that a file is there only whole, with its own mtime. A full or read-only disk
 * stops the restore (one error); other failures concern their member alone. Folder modes and
 * times are set last, deepest first, so that a read-only folder does not stop its own contents.
 */
export interface ExtractOptions {
  /** The target folder (absolute); created if missing (see openTarget). */
  dir: string;
  /** Which members to restore; all when absent. */
  select?: (name: string) => boolean;
  force: boolean;
  /** Set owners (root only). */
  owners: boolean;
  onProblem: (path: string, message: string) => void;
}

export interface ExtractStats {
  files: number;
  bytes: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  others: number;
  /** Members found already in place (the same file, link, FIFO or device), left as they were. */
  alreadyThere: number;
  /** Members not restored because something else is where they go (each was reported; `force` replaces it). */
  differing: number;
  /** Members that were not restored (each was reported). */
  problems: number;
}

const SLASH = 0x2f;
const O_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const UMASK = process.umask();
const EUID = process.geteuid?.() ?? -1;
const EGID = process.getegid?.() ?? -1;

/** The mode a file is created with: its own permission bits less the umask (set-id bits only once its owner is set). */
function createMode(mode: number): number {
  return mode & 0o777 & ~UMASK;
}

class Refused extends Error {}

export class Extractor {
  readonly stats: ExtractStats = { files: 0, bytes: 0, directories: 0, symlinks: 0, hardlinks: 0, others: 0, alreadyThere: 0, differing: 0, problems: 0 };
  private readonly root: Buffer;
  /** Relative folders (latin1 keys) known to be real directories, made or checked by this run. */
  private readonly verified = new Set<string>();
  private readonly dirTimes: { path: Buffer; m: TarMember }[] = [];
  /** A file that failed part-way and could not be removed. */
  private leftIncomplete: string | null = null;
  /** The file being written (created by this run), between its open and its close. */
  private writing: { target: Buffer; fd: number } | null = null;

  constructor(private readonly opts: ExtractOptions) {
    this.root = Buffer.from(openTarget(opts.dir));
  }

  /** Restores every selected member the reader brings; `stop` ends early (after the member it approves). */
  async run(reader: TarReader, stop?: (m: TarMember) => boolean): Promise<void> {
    for (let m = await reader.next(); m !== null; m = await reader.next()) {
      await this.member(m, reader);
      if (stop?.(m)) return;
    }
  }

  async member(m: TarMember, reader: TarReader): Promise<void> {
    const real = realName(m);
    const shown = printableName(real.name);
    if (this.opts.select && !this.opts.select(real.name.toString('utf8'))) return;
    try {
      const unsafe = unsafeName(real.name);
      if (unsafe) throw new Refused(`refused: it ${unsafe}`);
      const parts = splitName(real.name);
      if (parts.length === 0) return; // the target folder itself
      const target = this.prepare(parts, m.type === 'directory');
      switch (m.type) {
        case 'directory':
          return this.directory(target, m);
        case 'file':
          return await this.file(target, m, reader, real.sparse);
        case 'symlink':
          return this.symlink(target, m);
        case 'hardlink':
          return this.hardlink(target, m);
        default:
          return this.special(target, m);
      }
    } catch (err) {
      // The archive itself failed (damaged data, a lost connection): no later member can be trusted.
      if (err instanceof NbackupError) throw err;
      const fault = diskFault(err);
      if (fault) {
        const left = this.leftIncomplete ? `; ${this.leftIncomplete} is left incomplete` : ' and none left incomplete';
        throw new NbackupError('storage', `${this.opts.dir}: ${fault} (restoring ${shown}); the restore stopped there, with ${this.stats.files} files restored${left}`, { cause: err });
      }
      this.stats.problems++;
      this.opts.onProblem(shown, err instanceof Refused ? err.message : `not restored: ${errorMessage(err)}`);
    }
  }

  /** Folder modes and times, deepest first; then owners. */
  finish(): void {
    for (const { path, m } of this.dirTimes.sort((a, b) => b.path.length - a.path.length)) {
      try {
        if (this.opts.owners) fs.lchownSync(path, m.uid, m.gid);
        fs.chmodSync(path, m.mode);
        fs.utimesSync(path, m.mtime, m.mtime);
      } catch (err) {
        this.stats.problems++;
        this.opts.onProblem(printableName(path), `folder attributes not set: ${errorMessage(err)}`);
      }
    }
    this.dirTimes.length = 0;
  }

  /**
   * For a signal that ends the restore: closes and removes the file being written, if any (writes
   * are synchronous, so a handler runs between two of them). Returns its name and whether it is gone.
   */
  abandon(): { name: string; removed: boolean } | null {
    const w = this.writing;
    if (!w) return null;
    this.writing = null;
    try {
      fs.closeSync(w.fd);
    } catch {
      /* removing it is what matters */
    }
    return { name: printableName(w.target.subarray(this.root.length + 1)), removed: this.discard(w.target) };
  }

  /**
   * The absolute path for `parts`, after making sure every folder above it is a real directory
   * (created when missing). For a non-folder member the path itself must not exist unless
   * `force`, and is then removed (never a folder).
   */
  private prepare(parts: Buffer[], isDir: boolean): Buffer {
    let path = this.root;
    let key = '';
    for (let i = 0; i < parts.length - 1; i++) {
      path = Buffer.concat([path, Buffer.of(SLASH), parts[i]]);
      key += (i ? '/' : '') + parts[i].toString('latin1');
      if (this.verified.has(key)) continue;
      const st = fs.lstatSync(path, { throwIfNoEntry: false });
      if (!st) fs.mkdirSync(path, { mode: 0o700 });
      else if (!st.isDirectory()) throw new Refused(`refused: ${printableName(path.subarray(this.root.length + 1))} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}; nothing is written through it`);
      this.verified.add(key);
    }
    // An existing entry is dealt with when making the new one fails with EEXIST (existing()).
    return Buffer.concat([path, Buffer.of(SLASH), parts[parts.length - 1]]);
  }

  /**
   * What is at `target` where a member goes: true when it is already what the member would make
   * (counted, left alone). A folder is never replaced; anything else is removed with `force`, and
   * refused without it, saying how it differs.
   */
  private existing(target: Buffer, wanted: Wanted): boolean {
    const st = fs.lstatSync(target, { throwIfNoEntry: false });
    if (!st) return false;
    if (st.isDirectory()) throw new Refused('not restored: a folder of that name exists');
    if (this.opts.force) {
      fs.unlinkSync(target);
      return false;
    }
    const differs = howItDiffers(target, st, wanted);
    if (differs === null) {
      this.stats.alreadyThere++;
      return true;
    }
    this.stats.differing++;
    throw new Refused(`not restored: it exists and differs: ${differs} (--force replaces it)`);
  }

  /** Runs `make`, and once more after existing() when the name was taken; null when the entry is already there. */
  private replacing<T>(target: Buffer, wanted: Wanted, make: () => T): T | null {
    try {
      return make();
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      if (this.existing(target, wanted)) return null;
      return make();
    }
  }

  /** The owner to set, when it is not already the one a new file gets. */
  private ownerOf(m: TarMember): { uid: number; gid: number } | null {
    return this.opts.owners && (m.uid !== EUID || m.gid !== EGID) ? { uid: m.uid, gid: m.gid } : null;
  }

  private directory(target: Buffer, m: TarMember): void {
    const st = fs.lstatSync(target, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) {
      if (!this.opts.force) {
        this.stats.differing++;
        throw new Refused(`not restored: it exists and differs: ${howItDiffers(target, st, { type: 'directory' })} (--force replaces it)`);
      }
      // The link itself goes, never what it points to.
      fs.unlinkSync(target);
    }
    if (!st?.isDirectory()) fs.mkdirSync(target, { mode: 0o700 });
    this.verified.add(target.subarray(this.root.length + 1).toString('latin1'));
    this.dirTimes.push({ path: target, m });
    this.stats.directories++;
  }

  private async file(target: Buffer, m: TarMember, reader: TarReader, sparse: { realSize: number } | null): Promise<void> {
    const wanted: Wanted = { type: 'file', size: sparse ? sparse.realSize : m.size, mtime: m.mtime };
    const fd = this.replacing(target, wanted, () => fs.openSync(target, O_NEW, createMode(m.mode)));
    if (fd === null) return;
    this.writing = { target, fd };
    let open = true;
    let bytes = 0;
    try {
      if (sparse) {
        bytes = await writeSparse(fd, reader, sparse.realSize);
      } else {
        for (let b = await reader.data(); b !== null; b = await reader.data()) {
          for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off);
          bytes += b.length;
        }
      }
      const owner = this.ownerOf(m);
      if (owner) fs.fchownSync(fd, owner.uid, owner.gid);
      if (owner || createMode(m.mode) !== (m.mode & 0o7777)) fs.fchmodSync(fd, m.mode);
      fs.futimesSync(fd, m.mtime, m.mtime);
      // close() releases the descriptor even when it fails (a write that failed late).
      open = false;
      this.writing = null;
      fs.closeSync(fd);
    } catch (err) {
      this.writing = null;
      if (open) {
        try {
          fs.closeSync(fd);
        } catch {
          /* the first error is the one to report */
        }
      }
      this.discard(target);
      throw err;
    }
    this.stats.bytes += bytes;
    this.stats.files++;
  }

  /** Removes a file this run created and could not finish (made O_EXCL, it is ours); false when it stays. */
  private discard(target: Buffer): boolean {
    try {
      fs.unlinkSync(target);
      return true;
    } catch {
      this.leftIncomplete = printableName(target.subarray(this.root.length + 1));
      return false;
    }
  }

  private symlink(target: Buffer, m: TarMember): void {
    if (this.replacing(target, { type: 'symlink', linkname: m.linkname }, () => fs.symlinkSync(m.linkname, target)) === null) return;
    const owner = this.ownerOf(m);
    if (owner) fs.lchownSync(target, owner.uid, owner.gid);
    fs.lutimesSync(target, m.mtime, m.mtime);
    this.stats.symlinks++;
  }

  private hardlink(target: Buffer, m: TarMember): void {
    const unsafe = unsafeName(m.linkname);
    if (unsafe) throw new Refused(`refused: its link target ${printableName(m.linkname)} ${unsafe}`);
    const parts = splitName(m.linkname);
    if (parts.length === 0) throw new Refused('refused: it links to the target folder itself');
    // The target's folders must be real directories too; the target itself must already be here.
    let path = this.root;
    let to: fs.Stats | undefined;
    // parts is not empty: `to` is the link target's own entry after the loop.
    for (let i = 0; i < parts.length; i++) {
      path = Buffer.concat([path, Buffer.of(SLASH), parts[i]]);
      to = fs.lstatSync(path, { throwIfNoEntry: false });
      if (!to) throw new Refused(`not restored: its link target ${printableName(m.linkname)} was not restored`);
      if (i < parts.length - 1 && !to.isDirectory()) throw new Refused(`refused: the way to its link target goes through ${to.isSymbolicLink() ? 'a symlink' : 'a file'}`);
      if (i === parts.length - 1 && to.isDirectory()) throw new Refused('refused: a hard link to a folder');
    }
    const wanted: Wanted = { type: 'hardlink', to: to as fs.Stats, linkname: m.linkname };
    if (this.replacing(target, wanted, () => fs.linkSync(path, target)) === null) return;
    this.stats.hardlinks++;
  }

  /** FIFOs and devices: made by mkfifo / mknod (devices only as root). */
  private special(target: Buffer, m: TarMember): void {
    const wanted: Wanted = m.type === 'fifo' ? { type: 'fifo' } : { type: m.type === 'char-device' ? 'char-device' : 'block-device', major: m.devmajor, minor: m.devminor };
    if (this.existing(target, wanted)) return;
    const text = target.toString('utf8');
    if (!Buffer.from(text, 'utf8').equals(target)) throw new Refused(`not restored: a ${m.type} whose name is not UTF-8 cannot be made`);
    const mode = (m.mode & 0o7777).toString(8);
    const r =
      m.type === 'fifo'
        ? spawnSync('mkfifo', ['-m', mode, '--', text], { encoding: 'utf8' })
        : spawnSync('mknod', ['-m', mode, '--', text, m.type === 'char-device' ? 'c' : 'b', String(m.devmajor), String(m.devminor)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Refused(`not restored: ${(r.stderr || r.error?.message || 'failed').trim()}`);
    if (this.opts.owners) fs.lchownSync(target, m.uid, m.gid);
    fs.utimesSync(target, m.mtime, m.mtime);
    this.stats.others++;
  }
}

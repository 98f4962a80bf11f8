import fs from 'node:fs';
import path from 'node:path';
import { NbackupError, errnoCode } from '../errors.js';

/**
 * What the server finds under a storage's `base_dir`, which others may be able to write (a shared
 * mount, another admin, a compromised process): it follows no symlink below `base_dir`, opens a
 * file only when it is a regular file (never waiting on a FIFO), and removes only what it made.
 * Whatever it will not use is an `OddEntry`, named by its path, that the caller skips with a
 * warning or refuses with a message. (`base_dir` itself may be a symlink: that is the admin's.)
 */

/** Flags for every open of a file in a storage: a symlink is not followed, a FIFO not waited on. */
export const SAFE_OPEN = fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/** Something in a storage the server will not use, and why, in words that name it. */
export class OddEntryError extends NbackupError {
  constructor(
    readonly path: string,
    readonly why: string,
  ) {
    super('storage', `${path} ${why}`);
  }
}

/** What a directory entry or a stat is, in words: "a symlink", "a FIFO", … */
export function entryKind(st: fs.Stats | fs.Dirent): string {
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice() || st.isCharacterDevice()) return 'a device';
  return 'a regular file';
}

/** Why the server does not use `p` in place of what it expected: its kind, and a link's target. */
async function notWhatWasExpected(p: string, st: fs.Stats, expected: string): Promise<string> {
  if (!st.isSymbolicLink()) return `is ${entryKind(st)}, not ${expected}; left alone`;
  const target = await fs.promises.readlink(p).catch(() => '?');
  return `is a symlink (to ${target}); the server follows no symlink in a storage`;
}

/**
 * `base/names[0]/names[1]/…`, each below `base` a real folder, not a symlink; with `create` the
 * missing ones are made (and `base`, as at start-up). Throws OddEntryError naming the first one
 * that is not a folder, or the system's error (ENOENT when one is missing and not created).
 */
export async function realFolder(base: string, names: readonly string[], o: { create?: boolean } = {}): Promise<string> {
  if (o.create) await fs.promises.mkdir(base, { recursive: true, mode: 0o750 });
  let dir = base;
  for (const n of names) {
    dir = path.join(dir, n);
    if (o.create) {
      try {
        await fs.promises.mkdir(dir, { mode: 0o750 });
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
    }
    const st = await fs.promises.lstat(dir);
    if (!st.isDirectory()) throw new OddEntryError(dir, await notWhatWasExpected(dir, st, 'a folder'));
  }
  return dir;
}

/** Opens `p` (with `flags`, plus SAFE_OPEN) only if it is a regular file; OddEntryError otherwise. */
export async function openRegular(p: string, flags: number = fs.constants.O_RDONLY, mode = 0o640): Promise<fs.promises.FileHandle> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(p, flags | SAFE_OPEN, mode);
  } catch (err) {
    if (errnoCode(err) !== 'ELOOP') throw err;
    throw new OddEntryError(p, await notWhatWasExpected(p, await fs.promises.lstat(p), 'a regular file'));
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new OddEntryError(p, await notWhatWasExpected(p, st, 'a regular file'));
  }
  return fh;
}

/** The same, as a bare descriptor (the temporary, staging and journal files of a session). */
export async function openRegularFd(p: string, flags: number, mode = 0o600): Promise<number> {
  let fd: number;
  try {
    fd = await new Promise<number>((resolve, reject) => fs.open(p, flags | SAFE_OPEN, mode, (err, n) => (err ? reject(err) : resolve(n))));
  } catch (err) {
    if (errnoCode(err) !== 'ELOOP') throw err;
    throw new OddEntryError(p, await notWhatWasExpected(p, await fs.promises.lstat(p), 'a regular file'));
  }
  const st = await new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (err, s) => (err ? reject(err) : resolve(s))));
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new OddEntryError(p, await notWhatWasExpected(p, st, 'a regular file'));
  }
  return fd;
}

/** A small regular file read whole (a `.sha256`, a session record); OddEntryError past `limit` bytes. */
export async function readSmallRegular(p: string, limit: number): Promise<Buffer> {
  const fh = await openRegular(p);
  try {
    const st = await fh.stat();
    if (st.size > limit) throw new OddEntryError(p, `holds ${st.size} bytes, more than the ${limit} such a file can hold; left alone`);
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await fh.read(buf, 0, st.size, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Removes `p` if it is a regular file or a symlink (the link itself: nothing outside is touched);
 * true when removed, false when it was not there. A folder, FIFO, socket or device is left, and an
 * OddEntryError says so.
 */
export async function removeFileEntry(p: string): Promise<boolean> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(p);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  if (!st.isFile() && !st.isSymbolicLink()) throw new OddEntryError(p, `is ${entryKind(st)}, not a file the server made; left alone`);
  try {
    await fs.promises.unlink(p);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  return true;
}

/**
 * Entries skipped while walking a storage, gathered so that one log line (or one CLI line each)
 * reports them, however many there are: the count, and the first few by path and reason.
 */
export class OddEntries {
  readonly items: { path: string; why: string }[] = [];
  count = 0;
  private static readonly KEPT = 20;

  add(p: string, why: string): void {
    this.count++;
    if (this.items.length < OddEntries.KEPT) this.items.push({ path: p, why });
  }

  /** Adds what an error says about an entry, when it is an OddEntryError; rethrows anything else. */
  addError(err: unknown): void {
    if (err instanceof OddEntryError) this.add(err.path, err.why);
    else throw err;
  }

  /** For a log line: `{ oddEntries, first: ["<path> <why>", …] }`. */
  fields(): { oddEntries: number; first: string[] } {
    return { oddEntries: this.count, first: this.items.map((i) => `${i.path} ${i.why}`) };
  }
}

import fs from 'node:fs';
import path from 'node:path';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';
import { ExcludeMatcher } from './exclude.js';
import { DT, listDirectory } from './dir-listing.js';
import type { FileRun } from './file-run.js';
import { checkSourceOverlap } from './source-overlap.js';
import { printableName } from '../../printable.js';
import type { TarEntryType } from './tar-header.js';

/**
 * Walks the sources depth-first in byte order of names, never following symlinks inside a
 * source, and yields one entry per thing to archive. Nothing is opened here but directories.
 * Metadata comes from lstat, except for entries the directory listing already calls regular
 * files: the packer opens those anyway and takes their metadata from fstat on the open file, so
 * a second look (one stat per file, the most common entry) would only cost time.
 *
 * Names are bytes: directory entries are read as Buffers and archived exactly, UTF-8 or not.
 *
 * Each directory is opened (O_NOFOLLOW, checked against its lstat by device and inode) and
 * everything in it is reached through `/proc/self/fd/<fd>/<name>`: a directory swapped for a
 * symlink or another directory while the backup runs (someone who may write in the tree, racing
 * a root agent) is never followed, before or after it is listed; the walk goes on in the one it
 * opened, or names the one it could not. The same short paths keep every system call below
 * PATH_MAX however deep the tree. Without /proc, paths are used as they are, and a directory is
 * anchored that way only once its path grows past ANCHOR_AT bytes.
 *
 * The walk uses synchronous fs calls on purpose: for trees of many small files a per-call
 * thread-pool round trip costs ~15x the wall time (docs/design.md), and each call is short.
 */
export interface ScanEntry {
  /** How to reach the entry now: its absolute path, or a path through an open directory handle. */
  access: Buffer;
  /** Member name: the absolute path less its leading '/', exact bytes. */
  name: Buffer;
  type: TarEntryType;
  /** lstat of the entry; null for a regular file known from its directory listing (see above). */
  stats: fs.Stats | null;
}

export interface ScanWarning {
  path: string;
  message: string;
}

export interface ScanOptions {
  exclude: readonly string[];
  onWarning: (w: ScanWarning) => void;
  /** Things worth saying that are not problems (a source that is a symlink). */
  onNotice?: (w: ScanWarning) => void;
}

/** Most names in one run, so that a huge directory is packed (and can be stopped) in pieces. */
const RUN_NAMES = 1024;

/** Without /proc: past this many bytes, a directory is reached through a handle (PATH_MAX is 4096). */
const ANCHOR_AT = 3000;
const PROC_FD = fs.existsSync('/proc/self/fd');
const SLASH = Buffer.from('/');
const O_DIRECTORY = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
/** Only for a source itself, a symlink to a directory being followed on purpose (rootOf). */
const O_DIRECTORY_FOLLOW = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY;

/** An entry's path for messages: `/` and its member name, escaped for a terminal. */
export function describeEntry(e: { name: Buffer }): string {
  return printableName(Buffer.concat([SLASH, e.name]));
}

function entryType(st: fs.Stats): TarEntryType | 'socket' | null {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char-device';
  if (st.isBlockDevice()) return 'block-device';
  if (st.isSocket()) return 'socket';
  return null;
}

/** Checks every source before anything is sent, so a typo or an overlap fails the entry up front. */
export function checkSources(sources: readonly string[]): void {
  for (const src of sources) {
    if (!path.isAbsolute(src)) throw new NbackupError('source', `source ${src} is not an absolute path`);
    try {
      fs.lstatSync(src);
    } catch (err) {
      const code = errnoCode(err);
      throw new NbackupError('source', `source ${src} ${code === 'ENOENT' ? 'does not exist' : errorMessage(err)}`);
    }
    try {
      fs.statSync(src);
    } catch (err) {
      const target = fs.readlinkSync(src);
      throw new NbackupError('source', `source ${src} is a symlink to ${target}, which cannot be reached: ${errorMessage(err)}`);
    }
  }
  checkSourceOverlap(sources);
}

interface Frame {
  /** How to reach this directory now (absolute path or a /proc/self/fd path). */
  access: Buffer;
  /** Its member name. */
  name: Buffer;
  /** Relative to the source root, as text, for exclude patterns. */
  rel: string;
  /** The listing (dir-listing.ts): names NUL-ended in byte order, and one type byte each. */
  names: Buffer;
  types: Uint8Array;
  /** The next entry: its index in `types`, and where its name starts in `names`. */
  i: number;
  pos: number;
  /** The directory handle this frame opened, closed when the frame is done. */
  anchor: number | null;
}

export function* scanSources(sources: readonly string[], opts: ScanOptions): Generator<ScanEntry> {
  yield* scan(sources, opts, false) as Generator<ScanEntry>;
}

/**
 * As scanSources, but the regular files that follow one another in a directory's listing come as
 * runs (file-run.ts), for the packer's native run packer; everything else comes one by one, in
 * the same order.
 */
export function* scanWithRuns(sources: readonly string[], opts: ScanOptions): Generator<ScanEntry | FileRun> {
  yield* scan(sources, opts, true);
}

function* scan(sources: readonly string[], opts: ScanOptions, runs: boolean): Generator<ScanEntry | FileRun> {
  const matcher = new ExcludeMatcher(opts.exclude);
  const seen = new Set<string>();
  for (const raw of sources) {
    const root = path.resolve(raw);
    if (seen.has(root)) continue;
    seen.add(root);
    yield* scanOne(root, matcher, opts, runs);
  }
}

function* scanOne(root: string, matcher: ExcludeMatcher, opts: ScanOptions, runs: boolean): Generator<ScanEntry | FileRun> {
  const rootBytes = Buffer.from(root, 'utf8');
  const rootEntry = rootOf(root, rootBytes, opts);
  if (!rootEntry) return;
  yield rootEntry;
  if (rootEntry.type !== 'directory') return;
  const excluding = matcher.patterns.length > 0;

  // An explicit stack of open directory listings keeps memory to one listing per level.
  const stack: Frame[] = [];
  // Regular files of the top frame not yet handed out (runs only): one slice of its listing,
  // names[runStart, runEnd), so a run is handed on without a copy.
  let runStart = -1;
  let runEnd = 0;
  let runCount = 0;
  const run = (top: Frame): FileRun => {
    const out: FileRun = { type: 'run', dir: top.access, dirName: top.name, names: top.names.subarray(runStart, runEnd) };
    runStart = -1;
    runCount = 0;
    return out;
  };
  try {
    const first = openFrame(rootBytes, rootEntry.name, '', opts, rootEntry.stats, true);
    if (first) stack.push(first);
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.i >= top.types.length) {
        if (runStart >= 0) yield run(top);
        closeFrame(stack.pop()!);
        continue;
      }
      const at = top.pos;
      const end = top.names.indexOf(0, at);
      const type = top.types[top.i++];
      top.pos = end + 1;
      const base = top.names.subarray(at, end);
      const rel = !excluding ? '' : top.rel === '' ? base.toString('utf8') : `${top.rel}/${base.toString('utf8')}`;
      if (excluding && matcher.excludes(rel)) {
        // A run is one slice of the listing: it ends before a name left out.
        if (runStart >= 0) yield run(top);
        continue;
      }
      if (runs && type === DT.file) {
        if (runStart < 0) runStart = at;
        runEnd = top.pos;
        if (++runCount >= RUN_NAMES) yield run(top);
        continue;
      }
      if (runStart >= 0) yield run(top);
      const access = joinAccess(top.access, base);
      const name = top.name.length === 0 ? base : Buffer.concat([top.name, SLASH, base]);
      let entry: ScanEntry | null;
      if (type === DT.file) {
        entry = { access, name, type: 'file', stats: null };
      } else {
        const st = lstatOrWarn(access, name, opts);
        entry = st && toEntry(access, name, st, opts);
      }
      if (!entry) continue;
      yield entry;
      if (entry.type === 'directory') {
        const frame = openFrame(access, name, rel, opts, entry.stats, false);
        if (frame) stack.push(frame);
      }
    }
  } finally {
    for (const f of stack) closeFrame(f);
  }
}

/** The source itself: a symlink to a directory (or file) is followed, with a notice. */
function rootOf(root: string, rootBytes: Buffer, opts: ScanOptions): ScanEntry | null {
  const name = Buffer.from(root.replace(/^\/+/, ''), 'utf8');
  let st = lstatOrWarn(rootBytes, name, opts);
  if (!st) return null;
  if (st.isSymbolicLink()) {
    let target: fs.Stats;
    try {
      target = fs.statSync(rootBytes);
    } catch (err) {
      opts.onWarning({ path: root, message: `is a symlink whose target cannot be reached (${errorMessage(err)}); only the link is archived` });
      return toEntry(rootBytes, name, st, opts);
    }
    opts.onNotice?.({ path: root, message: `source is a symlink to ${fs.readlinkSync(root)}; backing up what it points to, under the name ${root}` });
    st = target;
  }
  return toEntry(rootBytes, name, st, opts);
}

/** One file of a run as an entry of its own, for the packer's general way. */
export function runEntry(run: FileRun, base: Buffer): ScanEntry {
  const name = run.dirName.length === 0 ? base : Buffer.concat([run.dirName, SLASH, base]);
  return { access: joinAccess(run.dir, base), name, type: 'file', stats: null };
}

function joinAccess(dir: Buffer, base: Buffer): Buffer {
  return dir.length === 1 && dir[0] === 0x2f ? Buffer.concat([SLASH, base]) : Buffer.concat([dir, SLASH, base]);
}

/** The directory the walk looked at (lstat) is not the one it opened. */
class Replaced extends Error {}

/**
 * Opens and lists a directory, which is reached (with everything below it) through its handle
 * from then on; `seen` is what its lstat said (for a source, the stat of what it points to).
 */
function openFrame(access: Buffer, name: Buffer, rel: string, opts: ScanOptions, seen: fs.Stats | null, follow: boolean): Frame | null {
  let anchor: number | null = null;
  let reach = access;
  try {
    if (PROC_FD || access.length > ANCHOR_AT) {
      anchor = fs.openSync(access, follow ? O_DIRECTORY_FOLLOW : O_DIRECTORY);
      const now = fs.fstatSync(anchor);
      if (seen && (now.dev !== seen.dev || now.ino !== seen.ino)) throw new Replaced();
      reach = Buffer.from(`/proc/self/fd/${anchor}`);
    }
    const { names, types } = listDirectory(reach, anchor);
    return { access: reach, name, rel, names, types, i: 0, pos: 0, anchor };
  } catch (err) {
    if (anchor !== null) fs.closeSync(anchor);
    opts.onWarning({ path: describeEntry({ name }), message: frameProblem(err) });
    return null;
  }
}

function frameProblem(err: unknown): string {
  const code = errnoCode(err);
  if (err instanceof Replaced || code === 'ELOOP' || code === 'ENOTDIR') {
    return 'was replaced (by a symlink or another file) while the backup read its folder; its contents are not archived';
  }
  if (code === 'ENOENT') return 'vanished before its contents could be read';
  return `cannot list directory: ${errorMessage(err)}`;
}

function closeFrame(f: Frame): void {
  if (f.anchor !== null) fs.closeSync(f.anchor);
}

function lstatOrWarn(access: Buffer, name: Buffer, opts: ScanOptions): fs.Stats | null {
  try {
    return fs.lstatSync(access);
  } catch (err) {
    const code = errnoCode(err);
    opts.onWarning({ path: describeEntry({ name }), message: code === 'ENOENT' ? 'vanished before it could be read' : errorMessage(err) });
    return null;
  }
}

function toEntry(access: Buffer, name: Buffer, st: fs.Stats, opts: ScanOptions): ScanEntry | null {
  const type = entryType(st);
  if (type === 'socket') {
    opts.onWarning({ path: describeEntry({ name }), message: 'is a socket; sockets are not archived' });
    return null;
  }
  if (type === null) {
    opts.onWarning({ path: describeEntry({ name }), message: 'has an unknown file type; skipped' });
    return null;
  }
  return { access, name, type, stats: st };
}

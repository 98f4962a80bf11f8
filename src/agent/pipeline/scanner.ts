import fs from 'node:fs';
import path from 'node:path';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';
import { ExcludeMatcher } from './exclude.js';
import type { TarEntryType } from './tar-header.js';

/**
 * Walks the sources depth-first in name order, never following symlinks, and yields one entry per
 * thing to archive. Metadata comes from lstat; nothing is opened here.
 *
 * The walk uses synchronous fs calls on purpose: for trees of many small files a per-call
 * thread-pool round trip costs ~15x the wall time (docs/design.md), and each call is short.
 */
export interface ScanEntry {
  /** Absolute path on disk. */
  path: string;
  /** Member name: the absolute path less its leading '/'. */
  name: string;
  type: TarEntryType;
  stats: fs.Stats;
}

export interface ScanWarning {
  path: string;
  message: string;
}

export interface ScanOptions {
  exclude: readonly string[];
  onWarning: (w: ScanWarning) => void;
}

function memberName(absPath: string): string {
  return absPath.replace(/^\/+/, '');
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

/** Checks every source before anything is sent, so a typo fails the entry up front. */
export function checkSources(sources: readonly string[]): void {
  for (const src of sources) {
    if (!path.isAbsolute(src)) throw new NbackupError('source', `source ${src} is not an absolute path`);
    try {
      fs.lstatSync(src);
    } catch (err) {
      const code = errnoCode(err);
      const why = code === 'ENOENT' ? 'does not exist' : errorMessage(err);
      throw new NbackupError('source', `source ${src} ${why}`);
    }
  }
}

export function* scanSources(sources: readonly string[], opts: ScanOptions): Generator<ScanEntry> {
  const matcher = new ExcludeMatcher(opts.exclude);
  const seen = new Set<string>();
  for (const raw of sources) {
    const root = path.resolve(raw);
    if (seen.has(root)) continue;
    seen.add(root);
    yield* scanOne(root, matcher, opts);
  }
}

function* scanOne(root: string, matcher: ExcludeMatcher, opts: ScanOptions): Generator<ScanEntry> {
  const rootStat = lstatOrWarn(root, opts);
  if (!rootStat) return;
  const rootEntry = toEntry(root, rootStat, opts);
  if (!rootEntry) return;
  yield rootEntry;
  if (rootEntry.type !== 'directory') return;

  // An explicit stack of open directory listings keeps memory to one listing per level.
  const stack: { dir: string; rel: string; names: string[]; i: number }[] = [];
  const open = (dir: string, rel: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (err) {
      opts.onWarning({ path: dir, message: `cannot list directory: ${errorMessage(err)}` });
      return;
    }
    names.sort();
    stack.push({ dir, rel, names, i: 0 });
  };
  open(root, '');
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.names.length) {
      stack.pop();
      continue;
    }
    const name = top.names[top.i++];
    const abs = top.dir === '/' ? `/${name}` : `${top.dir}/${name}`;
    const rel = top.rel === '' ? name : `${top.rel}/${name}`;
    if (matcher.excludes(rel)) continue;
    const st = lstatOrWarn(abs, opts);
    if (!st) continue;
    const entry = toEntry(abs, st, opts);
    if (!entry) continue;
    yield entry;
    if (entry.type === 'directory') open(abs, rel);
  }
}

function lstatOrWarn(p: string, opts: ScanOptions): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (err) {
    const code = errnoCode(err);
    opts.onWarning({ path: p, message: code === 'ENOENT' ? 'vanished before it could be read' : errorMessage(err) });
    return null;
  }
}

function toEntry(p: string, st: fs.Stats, opts: ScanOptions): ScanEntry | null {
  const type = entryType(st);
  if (type === 'socket') {
    opts.onWarning({ path: p, message: 'is a socket; sockets are not archived' });
    return null;
  }
  if (type === null) {
    opts.onWarning({ path: p, message: 'has an unknown file type; skipped' });
    return null;
  }
  return { path: p, name: memberName(p), type, stats: st };
}

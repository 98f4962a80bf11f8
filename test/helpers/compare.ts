/**
 * Compares a source tree with a restored one, entry by entry, without following symlinks and
 * without ever opening anything but regular files (so FIFOs cannot block it). Names are compared
 * as bytes (UTF-8 or not), and paths may be longer than PATH_MAX.
 */
import { AssertionError } from 'node:assert';
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { DeepPaths, showPath } from './deep-path.js';

export interface CompareOptions {
  /**
   * Relative paths that must not exist in the restore. They (and everything below them) are left
   * out of the source side, and reported if present in the restore.
   */
  excludedPaths?: string[];
  /** Groups of relative paths that must be one inode (hard links) in the restore. */
  hardLinkGroups?: string[][];
  /** Also compare numeric uid/gid (default false). */
  checkOwner?: boolean;
}

type Kind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'char-device' | 'block-device' | 'unknown';

interface Entry {
  /** The relative path's bytes as latin1 text: one character per byte, so keys compare bytes. */
  rel: string;
  abs: Buffer;
  kind: Kind;
  st: Stats;
}

const key = (bytes: Buffer): string => bytes.toString('latin1');
/** A relative path as given by a caller (UTF-8 text) in key form. */
const keyOfText = (text: string): string => key(Buffer.from(text, 'utf8'));
const show = (k: string): string => showPath(Buffer.from(k, 'latin1'));

function kindOf(st: Stats): Kind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'char-device';
  if (st.isBlockDevice()) return 'block-device';
  return 'unknown';
}

/** lstat-walks `root`; returns entries by relative path key ("/"-separated, root itself excluded). */
async function walk(root: string, deep: DeepPaths): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const rootSt = await lstat(root);
  if (!rootSt.isDirectory()) throw new Error(`compareTrees: ${root} is not a directory`);
  const visit = async (absDir: Buffer, relDir: Buffer | null): Promise<void> => {
    const names = await readdir(deep.reach(absDir), { encoding: 'buffer' });
    names.sort(Buffer.compare);
    for (const name of names) {
      const rel = relDir ? Buffer.concat([relDir, Buffer.from('/'), name]) : name;
      const abs = Buffer.concat([absDir, Buffer.from('/'), name]);
      const st = await lstat(deep.reach(abs));
      const kind = kindOf(st);
      out.set(key(rel), { rel: key(rel), abs, kind, st });
      if (kind === 'dir') await visit(abs, rel);
    }
  };
  await visit(Buffer.from(root), null);
  return out;
}

export async function sha256File(path: string | Buffer): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function octal(mode: number): string {
  return '0' + (mode & 0o7777).toString(8).padStart(3, '0');
}

function iso(sec: number): string {
  const d = new Date(sec * 1000);
  return Number.isNaN(d.getTime()) ? String(sec) : `${d.toISOString().replace('.000Z', 'Z')} (${sec})`;
}

function mtimeSec(st: Stats): number {
  return Math.floor(st.mtimeMs / 1000);
}

function isUnder(rel: string, prefixes: string[]): boolean {
  for (const p of prefixes) {
    if (rel === p || rel.startsWith(p + '/')) return true;
  }
  return false;
}

/** Returns human-readable differences between the two trees; an empty array means identical. */
export async function compareTrees(
  srcRoot: string,
  restoredRoot: string,
  opts: CompareOptions = {},
): Promise<string[]> {
  const excluded = (opts.excludedPaths ?? []).map((p) => keyOfText(p.replace(/^\.\/+/, '').replace(/\/+$/, '')));
  const deep = new DeepPaths();
  try {
    return await compareWalked(await walk(srcRoot, deep), await walk(restoredRoot, deep), excluded, deep, opts);
  } finally {
    deep.close();
  }
}

async function compareWalked(
  src: Map<string, Entry>,
  dst: Map<string, Entry>,
  excluded: string[],
  deep: DeepPaths,
  opts: CompareOptions,
): Promise<string[]> {
  const diffs: string[] = [];

  const all = [...new Set([...src.keys(), ...dst.keys()])].sort();
  const missingDirs: string[] = [];
  const unexpectedDirs: string[] = [];
  for (const rel of all) {
    const s = src.get(rel);
    const d = dst.get(rel);
    if (isUnder(rel, excluded)) {
      if (d) diffs.push(`${show(rel)}: excluded path is present in the restore (${d.kind})`);
      continue;
    }
    if (s && !d) {
      // Report a missing directory once, not every entry under it.
      if (isUnder(rel, missingDirs)) continue;
      diffs.push(`${show(rel)}: missing from the restore (${s.kind})`);
      if (s.kind === 'dir') missingDirs.push(rel);
      continue;
    }
    if (!s && d) {
      if (isUnder(rel, unexpectedDirs)) continue;
      diffs.push(`${show(rel)}: unexpected in the restore (${d.kind})`);
      if (d.kind === 'dir') unexpectedDirs.push(rel);
      continue;
    }
    if (!s || !d) continue;
    if (s.kind !== d.kind) {
      diffs.push(`${show(rel)}: type differs: source ${s.kind}, restore ${d.kind}`);
      continue;
    }
    if (s.kind !== 'symlink') {
      if ((s.st.mode & 0o7777) !== (d.st.mode & 0o7777)) {
        diffs.push(`${show(rel)}: mode differs: source ${octal(s.st.mode)}, restore ${octal(d.st.mode)}`);
      }
      const sm = mtimeSec(s.st);
      const dm = mtimeSec(d.st);
      if (sm !== dm) diffs.push(`${show(rel)}: mtime differs: source ${iso(sm)}, restore ${iso(dm)}`);
    }
    if (opts.checkOwner && (s.st.uid !== d.st.uid || s.st.gid !== d.st.gid)) {
      diffs.push(`${show(rel)}: owner differs: source ${s.st.uid}:${s.st.gid}, restore ${d.st.uid}:${d.st.gid}`);
    }
    if (s.kind === 'symlink') {
      const [st, dt] = await Promise.all([readlink(deep.reach(s.abs), { encoding: 'buffer' }), readlink(deep.reach(d.abs), { encoding: 'buffer' })]);
      if (!st.equals(dt)) diffs.push(`${show(rel)}: symlink target differs: source ${JSON.stringify(showPath(st))}, restore ${JSON.stringify(showPath(dt))}`);
    } else if (s.kind === 'file') {
      if (s.st.size !== d.st.size) {
        diffs.push(`${show(rel)}: size differs: source ${s.st.size}, restore ${d.st.size}`);
      } else {
        const [sh, dh] = await Promise.all([sha256File(deep.reach(s.abs)), sha256File(deep.reach(d.abs))]);
        if (sh !== dh) diffs.push(`${show(rel)}: content differs (sha256 source ${sh.slice(0, 16)}…, restore ${dh.slice(0, 16)}…)`);
      }
    } else if (s.kind === 'char-device' || s.kind === 'block-device') {
      if (s.st.rdev !== d.st.rdev) diffs.push(`${show(rel)}: device number differs: source ${s.st.rdev}, restore ${d.st.rdev}`);
    }
  }

  for (const group of opts.hardLinkGroups ?? []) {
    const members = group.map((rel) => ({ rel, e: dst.get(keyOfText(rel)) }));
    const present = members.filter((m) => m.e !== undefined);
    if (present.length !== members.length) {
      const missing = members.filter((m) => !m.e).map((m) => m.rel);
      diffs.push(`hard link group [${group.join(', ')}]: missing from the restore: ${missing.join(', ')}`);
    }
    if (present.length < 2) continue;
    const first = present[0].e as Entry;
    for (const m of present.slice(1)) {
      const e = m.e as Entry;
      if (e.st.dev !== first.st.dev || e.st.ino !== first.st.ino) {
        diffs.push(`hard link group: ${m.rel} is not the same inode as ${present[0].rel} in the restore`);
      }
    }
  }
  return diffs;
}

/** Fails (AssertionError) with the first `max` differences if the trees differ. */
export async function assertTreesEqual(
  srcRoot: string,
  restoredRoot: string,
  opts: CompareOptions & { max?: number } = {},
): Promise<void> {
  const diffs = await compareTrees(srcRoot, restoredRoot, opts);
  if (diffs.length === 0) return;
  const max = opts.max ?? 20;
  const shown = diffs.slice(0, max).map((d) => `  - ${d}`);
  if (diffs.length > max) shown.push(`  … and ${diffs.length - max} more`);
  throw new AssertionError({
    message: `trees differ (${diffs.length} difference${diffs.length === 1 ? '' : 's'})\n` +
      `  source:  ${srcRoot}\n  restore: ${restoredRoot}\n${shown.join('\n')}`,
    actual: diffs,
    expected: [],
    operator: 'assertTreesEqual',
  });
}

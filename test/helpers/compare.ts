/**
 * Compares a source tree with a restored one, entry by entry, without following symlinks and
 * without ever opening anything but regular files (so FIFOs cannot block it).
 */
import { AssertionError } from 'node:assert';
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';

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
  rel: string;
  abs: string;
  kind: Kind;
  st: Stats;
}

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

/** lstat-walks `root`; returns entries by relative path ("/"-separated, root itself excluded). */
async function walk(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const rootSt = await lstat(root);
  if (!rootSt.isDirectory()) throw new Error(`compareTrees: ${root} is not a directory`);
  const visit = async (absDir: string, relDir: string): Promise<void> => {
    const names = await readdir(absDir);
    names.sort();
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = join(absDir, name);
      const st = await lstat(abs);
      const kind = kindOf(st);
      out.set(rel, { rel, abs, kind, st });
      if (kind === 'dir') await visit(abs, rel);
    }
  };
  await visit(root, '');
  return out;
}

export async function sha256File(path: string): Promise<string> {
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
  const excluded = (opts.excludedPaths ?? []).map((p) => p.replace(/^\.\/+/, '').replace(/\/+$/, ''));
  const [src, dst] = await Promise.all([walk(srcRoot), walk(restoredRoot)]);
  const diffs: string[] = [];

  const all = [...new Set([...src.keys(), ...dst.keys()])].sort();
  const missingDirs: string[] = [];
  const unexpectedDirs: string[] = [];
  for (const rel of all) {
    const s = src.get(rel);
    const d = dst.get(rel);
    if (isUnder(rel, excluded)) {
      if (d) diffs.push(`${rel}: excluded path is present in the restore (${d.kind})`);
      continue;
    }
    if (s && !d) {
      // Report a missing directory once, not every entry under it.
      if (isUnder(rel, missingDirs)) continue;
      diffs.push(`${rel}: missing from the restore (${s.kind})`);
      if (s.kind === 'dir') missingDirs.push(rel);
      continue;
    }
    if (!s && d) {
      if (isUnder(rel, unexpectedDirs)) continue;
      diffs.push(`${rel}: unexpected in the restore (${d.kind})`);
      if (d.kind === 'dir') unexpectedDirs.push(rel);
      continue;
    }
    if (!s || !d) continue;
    if (s.kind !== d.kind) {
      diffs.push(`${rel}: type differs: source ${s.kind}, restore ${d.kind}`);
      continue;
    }
    if (s.kind !== 'symlink') {
      if ((s.st.mode & 0o7777) !== (d.st.mode & 0o7777)) {
        diffs.push(`${rel}: mode differs: source ${octal(s.st.mode)}, restore ${octal(d.st.mode)}`);
      }
      const sm = mtimeSec(s.st);
      const dm = mtimeSec(d.st);
      if (sm !== dm) diffs.push(`${rel}: mtime differs: source ${iso(sm)}, restore ${iso(dm)}`);
    }
    if (opts.checkOwner && (s.st.uid !== d.st.uid || s.st.gid !== d.st.gid)) {
      diffs.push(`${rel}: owner differs: source ${s.st.uid}:${s.st.gid}, restore ${d.st.uid}:${d.st.gid}`);
    }
    if (s.kind === 'symlink') {
      const [st, dt] = await Promise.all([readlink(s.abs), readlink(d.abs)]);
      if (st !== dt) diffs.push(`${rel}: symlink target differs: source ${JSON.stringify(st)}, restore ${JSON.stringify(dt)}`);
    } else if (s.kind === 'file') {
      if (s.st.size !== d.st.size) {
        diffs.push(`${rel}: size differs: source ${s.st.size}, restore ${d.st.size}`);
      } else {
        const [sh, dh] = await Promise.all([sha256File(s.abs), sha256File(d.abs)]);
        if (sh !== dh) diffs.push(`${rel}: content differs (sha256 source ${sh.slice(0, 16)}…, restore ${dh.slice(0, 16)}…)`);
      }
    } else if (s.kind === 'char-device' || s.kind === 'block-device') {
      if (s.st.rdev !== d.st.rdev) diffs.push(`${rel}: device number differs: source ${s.st.rdev}, restore ${d.st.rdev}`);
    }
  }

  for (const group of opts.hardLinkGroups ?? []) {
    const members = group.map((rel) => ({ rel, e: dst.get(rel) }));
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

import fs from 'node:fs';
import { printableName } from '../../printable.js';

/**
 * An entry found where a member goes, against what the member would make there. A run over a tree
 * restored earlier finds most members already in place: a regular file of the member's size and
 * mtime (rsync's quick check: contents are not read), a symlink to the same target,
 * a hard link to the same inode, a FIFO, a device of the same numbers. Anything else differs, and
 * how is said in a few words, so that a file cut short by kill -9 (short, or with the time of the
 * kill as its mtime) stands out from the whole ones.
 */
export type Wanted =
  | { type: 'file'; size: number; mtime: number }
  | { type: 'directory' }
  | { type: 'symlink'; linkname: Buffer }
  | { type: 'hardlink'; to: fs.Stats; linkname: Buffer }
  | { type: 'fifo' }
  | { type: 'char-device' | 'block-device'; major: number; minor: number };

/** What `st` is, in words. */
function kindOf(st: fs.Stats): string {
  if (st.isFile()) return 'a file';
  if (st.isDirectory()) return 'a folder';
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'a socket';
}

/** Linux's split of a device number (glibc's gnu_dev_major/minor for numbers below 2^32). */
function deviceNumbers(rdev: number): { major: number; minor: number } {
  return { major: (rdev >>> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00) };
}

const shownTime = (ms: number): string => new Date(ms).toISOString();

/** How the entry `st` at `path` differs from what `wanted` describes, or null when it is that already. */
export function howItDiffers(path: Buffer, st: fs.Stats, wanted: Wanted): string | null {
  const is = kindOf(st);
  switch (wanted.type) {
    case 'file':
      if (!st.isFile()) return `${is}, not a file`;
      if (st.size !== wanted.size) return `${st.size} ${st.size === 1 ? 'byte' : 'bytes'}, not ${wanted.size}`;
      // Restored mtimes are set exactly (whole seconds from tar headers): anything else was not set by a restore.
      if (Math.abs(st.mtimeMs - wanted.mtime * 1000) >= 1) return `mtime ${shownTime(st.mtimeMs)}, not ${shownTime(wanted.mtime * 1000)}`;
      return null;
    case 'directory':
      return st.isDirectory() ? null : `${is}, not a folder`;
    case 'symlink': {
      if (!st.isSymbolicLink()) return `${is}, not a symlink`;
      const to = fs.readlinkSync(path, { encoding: 'buffer' });
      return to.equals(wanted.linkname) ? null : `a symlink to ${printableName(to)}, not to ${printableName(wanted.linkname)}`;
    }
    case 'hardlink':
      if (st.ino === wanted.to.ino && st.dev === wanted.to.dev) return null;
      return `${is}, not a hard link to ${printableName(wanted.linkname)}`;
    case 'fifo':
      return st.isFIFO() ? null : `${is}, not a FIFO`;
    default: {
      const block = wanted.type === 'block-device';
      if (block ? !st.isBlockDevice() : !st.isCharacterDevice()) return `${is}, not a ${block ? 'block' : 'character'} device`;
      const n = deviceNumbers(st.rdev);
      return n.major === wanted.major && n.minor === wanted.minor ? null : `device ${n.major},${n.minor}, not ${wanted.major},${wanted.minor}`;
    }
  }
}

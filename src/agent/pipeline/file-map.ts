import fs from 'node:fs';
import { loadAddon } from '../../native/addons.js';

/**
 * Where a regular file's data lies, so that a sparse file is archived as a sparse member (its
 * holes not read, not stored) and GNU tar restores it with its holes.
 *
 * The data regions come from SEEK_DATA / SEEK_HOLE (the nbackup_fs addon). Without the addon, a
 * file whose allocated blocks do not cover its size is read once to find runs of zeros, as GNU tar
 * does; any other file is read as a whole.
 */
export interface Extent {
  offset: number;
  length: number;
}

interface FsAddon {
  dataExtents(fd: number, size: number, maxExtents: number): number[] | null;
}

/** Beyond this many data regions the map costs more than it saves: the file is read as a whole. */
const MAX_EXTENTS = 65536;
/** Granularity of the zero scan: a filesystem block. */
const SCAN_BLOCK = 4096;
const SCAN_READ = 1024 * 1024;

/** The data regions of a file with holes, or null when the file is to be read as a whole. */
export function sparseMap(fd: number, st: fs.Stats): Extent[] | null {
  // Allocated blocks that cover the size leave no room for a hole.
  if (st.size === 0 || st.blocks * 512 >= st.size) return null;
  const addon = loadAddon<FsAddon>('nbackup_fs');
  const extents = addon ? fromFlat(addon.dataExtents(fd, st.size, MAX_EXTENTS)) : zeroScan(fd, st.size);
  if (!extents) return null;
  const data = extents.reduce((n, e) => n + e.length, 0);
  return data < st.size ? extents : null;
}

function fromFlat(flat: number[] | null): Extent[] | null {
  if (!flat) return null;
  const out: Extent[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push({ offset: flat[i], length: flat[i + 1] });
  return out;
}

/** Reads the file once and keeps the blocks that are not all zeros, merged into regions. */
function zeroScan(fd: number, size: number): Extent[] | null {
  const buf = Buffer.allocUnsafe(SCAN_READ);
  const zero = Buffer.alloc(SCAN_BLOCK);
  const out: Extent[] = [];
  let pos = 0;
  while (pos < size) {
    const n = fs.readSync(fd, buf, 0, Math.min(SCAN_READ, size - pos), pos);
    if (n === 0) break;
    for (let at = 0; at < n; at += SCAN_BLOCK) {
      const len = Math.min(SCAN_BLOCK, n - at);
      if (buf.subarray(at, at + len).equals(zero.subarray(0, len))) continue;
      const last = out[out.length - 1];
      if (last && last.offset + last.length === pos + at) last.length += len;
      else out.push({ offset: pos + at, length: len });
      if (out.length > MAX_EXTENTS) return null;
    }
    pos += n;
  }
  return out;
}

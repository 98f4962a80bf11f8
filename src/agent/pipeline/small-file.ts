import { loadAddon } from '../../native/addons.js';

/**
 * The packer's fast way for a small regular file: opened, checked, read into the block and closed
 * in one native call (src/native/read-small.c), with no Stats objects or exceptions on the way.
 * Anything unusual — a failed open, a file too big for the room left, hard links, holes, a short
 * read — is handed back for the general way, with the descriptor when the file is open.
 */
export interface SmallFileRead {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds. */
  mtime: number;
  /** Size or mtime differed after the read; `sizeAfter` is the later size. */
  changed: boolean;
  sizeAfter: number;
}

/** What became of the attempt: read (`SmallFileRead`), `OPEN_FAILED`, or an open descriptor. */
export type SmallFileOutcome = { read: SmallFileRead } | { fd: number } | 'open-failed';

interface FsAddon {
  readSmallFile(path: Buffer, block: Buffer, offset: number, room: number, meta: Float64Array): number;
}

const meta = new Float64Array(8);

/** The reader, or null without the addon (the packer then always goes the general way). */
export function smallFileReader(): ((path: Buffer, block: Buffer, offset: number, room: number) => SmallFileOutcome) | null {
  const addon = loadAddon<FsAddon>('nbackup_fs');
  if (!addon || typeof addon.readSmallFile !== 'function') return null;
  return (path, block, offset, room) => {
    const r = addon.readSmallFile(path, block, offset, room, meta);
    if (r === -1) return 'open-failed';
    if (r === -2) return { fd: meta[7] };
    return {
      read: { mode: meta[0], uid: meta[1], gid: meta[2], size: meta[3], mtime: meta[4], changed: meta[5] === 1, sizeAfter: meta[6] },
    };
  };
}

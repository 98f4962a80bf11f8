import { loadAddon } from '../../native/addons.js';

/**
 * A run of one directory's regular files, archived by one native call each time the packer gets
 * to it (src/native/pack-files.c): each file opened relative to the directory, read into the
 * block behind a ustar header, and its index line written, with no JavaScript per file. Whatever
 * is not a small plain file with a plain name is handed back to the packer's general way.
 */
export interface FileRun {
  type: 'run';
  /** How to reach the directory now (its path, or a /proc/self/fd path). */
  dir: Buffer;
  /** The directory's member name ('' for the root of the filesystem). */
  dirName: Buffer;
  /** The files' names, each ended by a NUL byte, in archive order. */
  names: Buffer;
}

/** What a call of the run packer came to. */
export const RUN = {
  /** Every name is packed. */
  done: 0,
  /** The index-lines buffer is full; go on from `at`. */
  lines: 1,
  /** The packer takes the file at `at` itself (open as `fd`, or not open when -1). */
  take: 2,
  /** The file at `at` is packed, but changed (`size` → `sizeAfter`) while it was read. */
  changed: 3,
  /** The directory cannot be opened: the packer takes every name from `at` on. */
  noDir: -1,
} as const;
export type RunStatus = (typeof RUN)[keyof typeof RUN];

export interface RunProgress {
  status: RunStatus;
  /** Byte offset in `names` of the file the status is about (or where to go on). */
  at: number;
  /** The block position after the packed files. */
  pos: number;
  /** Bytes of index lines written into `lines`, for `files` members. */
  lineBytes: number;
  files: number;
  bytesRead: number;
  fd: number;
  size: number;
  sizeAfter: number;
}

interface PackAddon {
  packFiles(dir: Buffer, prefix: Buffer, names: Buffer, at: number, block: Buffer, pos: number, tarBase: number, lines: Buffer, state: Float64Array): number;
}

/** Room for the index lines of one call; a line takes ~60 bytes plus its name. */
export const LINE_BYTES = 256 * 1024;

export type RunPacker = (run: FileRun, prefix: Buffer, at: number, block: Buffer, pos: number, tarBase: number, lines: Buffer) => RunProgress;

/** The native run packer, or null without the addon (runs are then not made). */
export function runPacker(): RunPacker | null {
  const addon = loadAddon<PackAddon>('nbackup_fs');
  if (!addon || typeof addon.packFiles !== 'function') return null;
  const state = new Float64Array(8);
  return (run, prefix, at, block, pos, tarBase, lines) => {
    const status = addon.packFiles(run.dir, prefix, run.names, at, block, pos, tarBase, lines, state) as RunStatus;
    return { status, at: state[0], pos: state[1], lineBytes: state[2], files: state[3], bytesRead: state[4], fd: state[5], size: state[6], sizeAfter: state[7] };
  };
}

/** The name that starts at byte `at` of a run, and where the next one starts. */
export function nameAt(run: FileRun, at: number): { base: Buffer; next: number } {
  const end = run.names.indexOf(0, at);
  const stop = end === -1 ? run.names.length : end;
  return { base: run.names.subarray(at, stop), next: stop + 1 };
}

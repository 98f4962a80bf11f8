import fs from 'node:fs';
import { loadAddon } from '../../native/addons.js';

/**
 * One directory's entries, sorted by name bytes, in two compact buffers: `names` holds every
 * name followed by a NUL, `types` one d_type byte per entry in the same order. A listing costs
 * its names and two bytes an entry; Node's Dirent objects cost ~550 bytes an entry (a directory
 * of a million files: ~550 MiB), and the scanner hands runs of files on as slices of `names`.
 *
 * Listed by the nbackup_fs addon (src/native/list-dir.c); without it, by readdirSync, packed the
 * same way once read.
 */
export interface DirListing {
  names: Buffer;
  types: Uint8Array;
}

/** d_type values (dirent.h); `unknown` is settled with lstat by the caller. */
export const DT = { unknown: 0, fifo: 1, char: 2, dir: 4, block: 6, file: 8, symlink: 10, socket: 12 } as const;

interface ListAddon {
  listDir(dir: Buffer | number): [Buffer, Buffer];
}

/**
 * Lists the directory at `dir` (a path as bytes), read through `fd` when one is open on it (it
 * stays open); throws as readdir does, with the errno's code.
 */
export function listDirectory(dir: Buffer, fd: number | null = null): DirListing {
  const addon = loadAddon<ListAddon>('nbackup_fs');
  if (addon && typeof addon.listDir === 'function') {
    const [names, types] = addon.listDir(fd ?? dir);
    return { names, types };
  }
  return packDirents(fs.readdirSync(dir, { encoding: 'buffer', withFileTypes: true }) as unknown as fs.Dirent[]);
}

function direntType(d: fs.Dirent): number {
  if (d.isFile()) return DT.file;
  if (d.isDirectory()) return DT.dir;
  if (d.isSymbolicLink()) return DT.symlink;
  if (d.isFIFO()) return DT.fifo;
  if (d.isCharacterDevice()) return DT.char;
  if (d.isBlockDevice()) return DT.block;
  if (d.isSocket()) return DT.socket;
  return DT.unknown;
}

/** A readdirSync listing (Buffer names) sorted and packed as the addon packs it. */
export function packDirents(entries: fs.Dirent[]): DirListing {
  const named = entries.map((d) => ({ name: d.name as unknown as Buffer, type: direntType(d) }));
  named.sort((a, b) => Buffer.compare(a.name, b.name));
  let total = 0;
  for (const e of named) total += e.name.length + 1;
  const names = Buffer.allocUnsafe(total);
  const types = new Uint8Array(named.length);
  let at = 0;
  named.forEach((e, i) => {
    at += e.name.copy(names, at);
    names[at++] = 0;
    types[i] = e.type;
  });
  return { names, types };
}

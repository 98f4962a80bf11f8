/**
 * A tree of the files a backup tool most easily loses: names that are not UTF-8 (a file, a
 * directory and what it holds, a long name, a symlink target), a path longer than PATH_MAX, a
 * sparse file, and a FIFO.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface OddTree {
  root: string;
  /** The deep chain: `deep/<level01>/…/<levelNN>`, each component DEEP_COMPONENT bytes. */
  deepDirs: string[];
  /** Relative path of the file at the bottom of the deep chain. */
  deepFile: string;
  /** Relative path and sizes of the sparse file. */
  sparse: { rel: string; size: number; dataBytes: number };
  /** Names that are not UTF-8, as bytes relative to the root. */
  byteNames: Buffer[];
}

const MiB = 1024 * 1024;
export const DEEP_LEVELS = 25;

function bytesPath(root: string, ...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat([Buffer.from(root), ...parts.flatMap((p) => [Buffer.from('/'), typeof p === 'string' ? Buffer.from(p) : p])]);
}

export function makeOddTree(root: string, sparseSize = 1024 * MiB): OddTree {
  fs.mkdirSync(root, { recursive: true });
  const latin1 = (s: string) => Buffer.from(s, 'latin1');
  // Not UTF-8: a file, a directory (with a file and a subdirectory), a long name, a symlink.
  const cafe = latin1('caf\xe9.txt');
  const dir = latin1('d\xff');
  const longName = Buffer.concat([Buffer.from('x'.repeat(150)), latin1('\xe9\xe8.bin')]);
  fs.writeFileSync(bytesPath(root, cafe), 'latin-1 name\n');
  fs.mkdirSync(bytesPath(root, dir));
  fs.writeFileSync(bytesPath(root, dir, 'inner.txt'), 'inside a non-UTF-8 directory\n');
  fs.mkdirSync(bytesPath(root, dir, latin1('sub\xfe')));
  fs.writeFileSync(bytesPath(root, dir, latin1('sub\xfe'), 'deeper.txt'), 'two levels in\n');
  fs.writeFileSync(bytesPath(root, longName), Buffer.alloc(3000, 7));
  fs.symlinkSync(Buffer.concat([Buffer.from('./'), cafe]), bytesPath(root, latin1('link-\xe9')));
  fs.writeFileSync(path.join(root, 'plain.txt'), 'a plain neighbour\n');

  // A path longer than PATH_MAX (4096): made from inside with relative names.
  const component = (i: number) => `level${String(i).padStart(2, '0')}-${'0'.repeat(190)}`;
  const deepDirs = Array.from({ length: DEEP_LEVELS }, (_, i) => component(i + 1));
  fs.mkdirSync(path.join(root, 'deep'));
  const script = `cd "$1/deep" && for d in ${deepDirs.join(' ')}; do mkdir "$d" && cd "$d" || exit 1; done; printf 'at the bottom\\n' > bottom.txt; printf 'n\\n' > "$(printf 'caf\\351')"`;
  execFileSync('bash', ['-c', script, 'make-deep', root]);
  const deepFile = ['deep', ...deepDirs, 'bottom.txt'].join('/');

  // A sparse file: `sparseSize` bytes, 1 MiB of data in three places, the rest holes.
  const rel = 'sparse.img';
  const fd = fs.openSync(path.join(root, rel), 'w');
  const pieces = [
    [0, 256 * 1024],
    [Math.floor(sparseSize / 2), 512 * 1024],
    [sparseSize - 4 * MiB, 256 * 1024],
  ] as const;
  for (const [at, len] of pieces) fs.writeSync(fd, Buffer.alloc(len, 0x5a), 0, len, at);
  fs.ftruncateSync(fd, sparseSize);
  fs.closeSync(fd);

  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  return { root, deepDirs, deepFile, sparse: { rel, size: sparseSize, dataBytes: MiB }, byteNames: [cafe, dir, longName] };
}

/** Disk space a file really uses (st_blocks), in bytes. */
export function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

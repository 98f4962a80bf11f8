/**
 * A source tree that exercises every case a backup has to get right. Deterministic content
 * (seeded PRNG), so two trees built by makeTree are byte-identical (apart from "now" mtimes,
 * inode numbers and the absolute symlink target, which embeds `root`).
 */
import { execFile } from 'node:child_process';
import { chmod, link, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

export interface TreeInfo {
  /** Absolute path of the tree. */
  root: string;
  /** The exclude globs a backup of this tree should be configured with. */
  excludes: string[];
  /** Relative paths (files AND directories) that must be absent from a restore that applied `excludes`. */
  excludedPaths: string[];
  /** Groups of relative paths that are one inode in the source, and must be one inode in a restore. */
  hardLinkGroups: string[][];
  /** Relative paths of the interesting entries, by role (e.g. `notable.fifo`). */
  notable: Record<string, string>;
}

/** Excludes the backup under test is expected to be configured with. */
export const TREE_EXCLUDES: readonly string[] = ['*.log', '.git/**', 'node_modules/**'];

/** Seeded PRNG (mulberry32) — reproducible across runs and machines. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** `size` pseudo-random (incompressible) bytes from `seed`. */
export function randomBytesSeeded(size: number, seed: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.allocUnsafe(size);
  let i = 0;
  for (; i + 4 <= size; i += 4) buf.writeUInt32LE(next(), i);
  if (i < size) {
    const last = next();
    for (let k = 0; i < size; i++, k++) buf[i] = (last >>> (8 * k)) & 0xff;
  }
  return buf;
}

const WORDS = [
  'backup', 'stream', 'archive', 'restore', 'tar', 'gzip', 'server', 'agent', 'checksum', 'block',
  'header', 'record', 'the', 'of', 'and', 'a', 'to', 'in', 'is', 'for', 'data', 'file', 'directory',
  'symlink', 'inode', 'mtime', 'mode', 'owner', 'quick', 'brown', 'fox', 'lazy', 'dog',
];

/** About `size` bytes of compressible, line-oriented ASCII text from `seed` (exactly `size` bytes). */
export function compressibleText(size: number, seed: number): Buffer {
  const next = prng(seed);
  const parts: string[] = [];
  let len = 0;
  let n = 0;
  while (len < size) {
    const words: string[] = [];
    const count = 6 + (next() % 10);
    for (let i = 0; i < count; i++) words.push(WORDS[next() % WORDS.length]);
    const line = `${String(++n).padStart(7, '0')}: ${words.join(' ')}.\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join(''), 'ascii').subarray(0, size);
}

function runMkfifo(path: string): Promise<void> {
  return new Promise((res, rej) => {
    execFile('mkfifo', ['-m', '0644', path], { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err) rej(new Error(`mkfifo ${path} failed: ${err.message}\n${String(stderr)}`));
      else res();
    });
  });
}

const MiB = 1024 * 1024;

/** 2001-02-03T04:05:06Z and friends (seconds since the epoch). */
export const OLD_TIMES = {
  file2001: Date.UTC(2001, 1, 3, 4, 5, 6) / 1000,
  file1980: Date.UTC(1980, 0, 1, 0, 0, 2) / 1000,
  dir1999: Date.UTC(1999, 11, 31, 23, 59, 59) / 1000,
  dir1995: Date.UTC(1995, 4, 6, 7, 8, 9) / 1000,
  dir2010: Date.UTC(2010, 9, 10, 10, 10, 10) / 1000,
} as const;

/**
 * Builds the tree under `root` (created if missing; should be empty). Returns what a test needs to
 * check a restore of it. Takes a few hundred ms (about 6 MiB is written).
 */
export async function makeTree(rootArg: string): Promise<TreeInfo> {
  const root = resolve(rootArg);
  await mkdir(root, { recursive: true });
  const abs = (rel: string) => join(root, rel);
  const notable: Record<string, string> = {};
  const excludedPaths: string[] = [];
  const dirTimes: Array<[string, number]> = [];
  const fileTimes: Array<[string, number]> = [];

  const dir = async (rel: string, mode = 0o755) => {
    await mkdir(abs(rel), { recursive: true });
    await chmod(abs(rel), mode);
  };
  const file = async (rel: string, content: string | Buffer, mode = 0o644) => {
    await mkdir(dirname(abs(rel)), { recursive: true });
    await writeFile(abs(rel), content);
    await chmod(abs(rel), mode);
  };
  const excludedFile = async (rel: string, content: string) => {
    await file(rel, content);
    excludedPaths.push(rel);
  };

  // --- sizes around tar's 512-byte blocks, and big files ---------------------------------------
  await file('empty.txt', '');
  notable.empty = 'empty.txt';
  for (const n of [1, 511, 512, 513]) await file(`sizes/${n}.bin`, randomBytesSeeded(n, 1000 + n));
  await file('sizes/1MiB+7.bin', randomBytesSeeded(MiB + 7, 7));
  notable.mib7 = 'sizes/1MiB+7.bin';
  await file('random-3MiB.bin', randomBytesSeeded(3 * MiB + 12_345, 3));
  notable.random = 'random-3MiB.bin';
  await file('text-2MiB.txt', compressibleText(2 * MiB + 333, 2));
  notable.text = 'text-2MiB.txt';

  // --- long names and paths -----------------------------------------------------------------
  const longName = 'long-name-' + 'n'.repeat(104) + '.txt'; // 118 bytes > 100 (ustar name field)
  await file(`names/${longName}`, 'long name\n');
  notable.longName = `names/${longName}`;
  const longComponent = 'component-' + 'c'.repeat(200) + '.dat'; // 214 bytes, one component
  await file(`names/${longComponent}`, 'long component\n');
  notable.longComponent = `names/${longComponent}`;
  const deepDirs = ['deep'];
  for (let i = 1; i <= 5; i++) deepDirs.push(`level${i}-` + 'd'.repeat(50)); // 57 bytes each
  const longPath = [...deepDirs, 'file-at-the-bottom.txt'].join('/'); // > 300 bytes total
  await file(longPath, 'deep file\n');
  notable.longPath = longPath;
  await file('names/with space & $pecial (chars) #1.txt', 'special characters\n');
  notable.specialChars = 'names/with space & $pecial (chars) #1.txt';
  await file('.hidden', 'dotfile\n');
  await file('.dotdir/inner.txt', 'inside a dot directory\n');
  notable.dotfile = '.hidden';

  // --- unicode --------------------------------------------------------------------------------
  await file('unicode/café.txt', 'café\n');
  await file('unicode/日本語/ファイル.txt', 'こんにちは\n');
  await file('unicode/😀 emoji.txt', '😀\n');
  notable.cafe = 'unicode/café.txt';
  notable.japanese = 'unicode/日本語/ファイル.txt';
  notable.emoji = 'unicode/😀 emoji.txt';
  // Names that are not UTF-8 (Latin-1 bytes): a file, and a directory with a file in it.
  const bytesDir = Buffer.concat([Buffer.from(`${root}/bytes-`), Buffer.from([0xff])]);
  await mkdir(bytesDir);
  await writeFile(Buffer.concat([bytesDir, Buffer.from('/caf'), Buffer.from([0xe9]), Buffer.from('.txt')]), 'latin-1 name\n');

  // --- symlinks (never followed by a correct backup) -------------------------------------------
  await dir('links');
  await symlink('../sizes/1.bin', abs('links/relative'));
  await symlink(abs('sizes/1.bin'), abs('links/absolute'));
  await symlink('../does/not/exist', abs('links/dangling'));
  await symlink('../unicode', abs('links/to-dir'));
  const longTarget = `../names/${longName}`; // 127 bytes > 100 (ustar linkname field)
  await symlink(longTarget, abs('links/long-target'));
  Object.assign(notable, {
    symlinkRelative: 'links/relative',
    symlinkAbsolute: 'links/absolute',
    symlinkDangling: 'links/dangling',
    symlinkToDir: 'links/to-dir',
    symlinkLongTarget: 'links/long-target',
  });

  // --- hard links -----------------------------------------------------------------------------
  await file('hardlinks/a.txt', randomBytesSeeded(5000, 42));
  await link(abs('hardlinks/a.txt'), abs('hardlinks/b.txt'));
  await dir('hardlinks-other');
  await link(abs('hardlinks/a.txt'), abs('hardlinks-other/c.txt'));
  const hardLinkGroups = [['hardlinks/a.txt', 'hardlinks/b.txt', 'hardlinks-other/c.txt']];

  // --- empty directories ----------------------------------------------------------------------
  await dir('empty-dir');
  await dir('empty-nested/a/b/c');
  notable.emptyDir = 'empty-dir';
  notable.emptyNested = 'empty-nested/a/b/c';

  // --- permissions ----------------------------------------------------------------------------
  await file('modes/0600.txt', 'owner only\n', 0o600);
  await file('modes/0640.txt', 'owner rw, group r\n', 0o640);
  await file('modes/0755.sh', '#!/bin/sh\necho hello\n', 0o755);
  await file('modes/0444.txt', 'read only\n', 0o444);
  await file('modes/private-0700/secret.txt', 'secret\n', 0o600);
  await chmod(abs('modes/private-0700'), 0o700);
  notable.dir0700 = 'modes/private-0700';

  // --- old mtimes (files now, directories at the very end) ------------------------------------
  await file('old/old-file.txt', 'from 2001\n');
  fileTimes.push(['old/old-file.txt', OLD_TIMES.file2001]);
  await file('old/nested-old/dos-epoch.txt', 'from 1980\n');
  fileTimes.push(['old/nested-old/dos-epoch.txt', OLD_TIMES.file1980]);
  fileTimes.push(['modes/0444.txt', OLD_TIMES.file2001]);
  fileTimes.push(['sizes/513.bin', OLD_TIMES.file2001]);
  dirTimes.push(['old/nested-old', OLD_TIMES.dir1995]);
  dirTimes.push(['old', OLD_TIMES.dir1999]);
  dirTimes.push(['empty-nested/a/b/c', OLD_TIMES.dir2010]);
  dirTimes.push(['empty-dir', OLD_TIMES.dir1999]);
  dirTimes.push(['modes/private-0700', OLD_TIMES.dir2010]);
  dirTimes.push(['unicode/日本語', OLD_TIMES.dir1995]);
  notable.oldFile = 'old/old-file.txt';
  notable.oldDir = 'old';

  // --- special files --------------------------------------------------------------------------
  await dir('special');
  await runMkfifo(abs('special/fifo'));
  notable.fifo = 'special/fifo';

  // --- what the exclude list must drop (and near misses it must keep) -------------------------
  await excludedFile('app.log', 'log line\n');
  await excludedFile('sub/deep/x.log', 'deep log line\n');
  await file('sub/deep/keep.txt', 'keep me\n');
  await file('keep/app.log.txt', 'not a .log file\n');
  await file('.gitignore', 'node_modules/\n');
  excludedPaths.push('.git', '.git/objects', '.git/objects/ab', '.git/refs', '.git/refs/heads');
  await excludedFile('.git/HEAD', 'ref: refs/heads/main\n');
  await excludedFile('.git/config', '[core]\n\tbare = false\n');
  await excludedFile('.git/objects/ab/cdef0123456789', randomBytesSeeded(300, 9).toString('base64'));
  await excludedFile('.git/refs/heads/main', '0123456789abcdef0123456789abcdef01234567\n');
  excludedPaths.push('node_modules', 'node_modules/pkg', 'node_modules/pkg/lib');
  await excludedFile('node_modules/pkg/package.json', '{"name":"pkg","version":"1.0.0"}\n');
  await excludedFile('node_modules/pkg/index.js', 'module.exports = 42;\n');
  await excludedFile('node_modules/pkg/lib/util.js', 'exports.x = 1;\n');
  notable.keptNearMiss = 'keep/app.log.txt';

  // --- timestamps last: files, then directories deepest first ---------------------------------
  for (const [rel, t] of fileTimes) await utimes(abs(rel), t, t);
  dirTimes.sort((a, b) => b[0].split('/').length - a[0].split('/').length);
  for (const [rel, t] of dirTimes) await utimes(abs(rel), t, t);

  excludedPaths.sort();
  return { root, excludes: [...TREE_EXCLUDES], excludedPaths, hardLinkGroups, notable };
}

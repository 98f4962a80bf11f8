/**
 * The benchmark's command line:
 * `npm run bench -- [--dir PATH]... [--small-files N [--per-folder N]] [--runs N] [--parallels L] [--format L] [--restore] [--warm-once] [--keep]`.
 */
import { resolve } from 'node:path';

const DEFAULT_DIRS = ['/usr/share', '/usr/lib/x86_64-linux-gnu'];

export type BenchFormat = 'gzip' | 'zstd';

export interface Options {
  dirs: string[];
  /** Back up this many generated small files instead of `dirs` (0: off). */
  smallFiles: number;
  /** How many of the generated small files share a folder (1000; all of them: one huge folder). */
  perFolder: number;
  runs: number;
  parallels: number[];
  formats: BenchFormat[];
  /** Measure restores (full and one file) instead of backups. */
  restore: boolean;
  keep: boolean;
  /**
   * Read the data again right before every timed run (default), not only once at the start: some
   * machines drop page cache that has not been touched for seconds (DAMON's proactive reclaim).
   */
  warmEach: boolean;
}

export class UsageError extends Error {}

export const USAGE = `usage: npm run bench -- [--dir PATH]... [--small-files N [--per-folder N]] [--runs N] [--parallels L] [--format L] [--restore] [--warm-once] [--keep]
  --dir PATH        folder to back up (repeatable; default ${DEFAULT_DIRS.join(' and ')})
  --small-files N   back up N generated files of 1-4 KiB instead (e.g. 200000)
  --per-folder N    with --small-files: N files per folder (default 1000; as many as --small-files
                    for one huge folder, e.g. --small-files 1000000 --per-folder 1000000)
  --runs N          repetitions, medians reported when N > 1 (default 1)
  --parallels L     comma-separated "parallels" values, one nbackup run each (default 0; e.g. 0,4)
  --format L        comma-separated archive formats, gzip and/or zstd (default gzip); each
                    parallels value runs once per format, at the format's default level
  --restore         measure restores instead: the full restore against ssh cat | tar xzf, and one
                    small file through the index (time and bytes read)
  --warm-once       read the data into the page cache once at the start, not before every timed run
                    (each run reads it again by default: some machines evict page cache untouched
                    for seconds, which leaves later runs reading from disk)
  --keep            keep the temporary folder`;

/** Parses the arguments (after `node bench.js`); throws UsageError. `--help` prints USAGE and exits 0. */
export function parseOptions(argv: string[]): Options {
  const dirs: string[] = [];
  let runs = 1;
  let parallels = [0];
  let formats: BenchFormat[] = ['gzip'];
  let smallFiles = 0;
  let perFolder = 1000;
  let keep = false;
  let restore = false;
  let warmEach = true;
  const intArg = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = v === undefined ? NaN : Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} expects an integer between ${min} and ${max}, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let inline: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const value = () => inline ?? argv[++i];
    switch (a) {
      case '--dir': {
        const v = value();
        if (!v) throw new UsageError('--dir expects a path');
        dirs.push(resolve(v));
        break;
      }
      case '--runs':
        runs = intArg('--runs', value(), 1, 1000);
        break;
      case '--parallels':
        parallels = (value() ?? '').split(',').map((v) => intArg('--parallels', v, 0, 255));
        break;
      case '--format': {
        const list = (value() ?? '').split(',');
        for (const f of list) if (f !== 'gzip' && f !== 'zstd') throw new UsageError(`--format expects gzip and/or zstd, got ${JSON.stringify(f)}`);
        formats = [...new Set(list as BenchFormat[])];
        break;
      }
      case '--small-files':
        smallFiles = intArg('--small-files', value(), 1, 10_000_000);
        break;
      case '--per-folder':
        perFolder = intArg('--per-folder', value(), 1, 10_000_000);
        break;
      case '--keep':
        keep = true;
        break;
      case '--restore':
        restore = true;
        break;
      case '--warm-once':
        warmEach = false;
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
      // eslint-disable-next-line no-fallthrough
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  if (smallFiles > 0 && dirs.length > 0) throw new UsageError('--small-files and --dir exclude each other');
  return { dirs: dirs.length > 0 ? dirs : DEFAULT_DIRS, smallFiles, perFolder, runs, parallels, formats, restore, keep, warmEach };
}

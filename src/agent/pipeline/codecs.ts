import zlib from 'node:zlib';
import { COMPRESSION_LEVELS, type ArchiveFormat } from '../../config/index.js';
import { NbackupError } from '../../errors.js';
import { addonProblem, loadAddon } from '../../native/addons.js';

/**
 * Whole-block compression on libuv's thread pool: each block becomes one complete gzip member or
 * zstd frame, so blocks compress in parallel and their concatenation is a standard .gz / .zst.
 *
 * Engines, from the nbackup_codec addon (src/native/codecs.c), linked against Debian's libraries:
 * ISA-L's igzip for the fast gzip levels, libdeflate for the others, libzstd for zstd. Which
 * engine serves which gzip level was measured on the benchmark data (docs/design.md). Without the
 * addon, gzip falls back to node:zlib (said once, with the packages to install); zstd has no
 * fallback in Node 20 and fails with the same advice. `NBACKUP_GZIP=zlib` forces the fallback.
 */
export type Engine = 'igzip' | 'libdeflate' | 'zstd' | 'zlib';

export interface BlockCodec {
  readonly format: ArchiveFormat;
  readonly engine: Engine;
  /** The level the configured level maps to, in the engine's own scale. */
  readonly engineLevel: number;
  /**
   * Bytes of tar per block (one gzip member or zstd frame). gzip's 32 KiB window gains nothing
   * from more than 1 MiB; zstd level 3 finds longer matches in 4 MiB frames, which makes it both
   * smaller and faster (measured on the benchmark data: docs/design.md).
   */
  readonly blockSize: number;
  /** Upper bound of the compressed size of `length` input bytes. */
  bound(length: number): number;
  /**
   * Compresses `input` into `output` (at least `bound(input.length)` bytes) on the thread pool.
   * Resolves with a view of `output`, or (zlib, which ignores `output`) a fresh buffer. Neither
   * buffer may be touched until it settles.
   */
  compress(input: Buffer, output: Buffer): Promise<Buffer>;
}

interface CodecAddon {
  compress(engine: number, input: Buffer, output: Buffer, level: number, cb: (err: Error | null, n: number) => void): void;
  bound(engine: number, length: number): number;
  versions(): { isal: string; libdeflate: string; zstd: string };
}

const ADDON = 'nbackup_codec';
const GZIP_BLOCK = 1024 * 1024;
const ZSTD_BLOCK = 4 * 1024 * 1024;
const ENGINE_ID = { igzip: 0, libdeflate: 1, zstd: 2 } as const;

/** The Debian packages that give full speed (and zstd). */
export const NATIVE_PACKAGES = 'libisal-dev libdeflate-dev libzstd-dev pkg-config and a C compiler';

/**
 * gzip level → engine and engine level. igzip is several times faster where it compresses about
 * as well; libdeflate from level 4 up compresses better than igzip's best (measured: design.md).
 */
const GZIP_ENGINES: Record<number, { engine: 'igzip' | 'libdeflate'; level: number }> = {
  1: { engine: 'igzip', level: 1 },
  2: { engine: 'igzip', level: 2 },
  3: { engine: 'igzip', level: 3 },
  4: { engine: 'libdeflate', level: 4 },
  5: { engine: 'libdeflate', level: 5 },
  6: { engine: 'libdeflate', level: 6 },
  7: { engine: 'libdeflate', level: 7 },
  8: { engine: 'libdeflate', level: 8 },
  9: { engine: 'libdeflate', level: 9 },
};

function nativeAddon(): CodecAddon | null {
  if (process.env.NBACKUP_GZIP === 'zlib') return null;
  return loadAddon<CodecAddon>(ADDON);
}

/** Why the native codecs are not in use ('' when they are). */
export function nativeCodecProblem(): string {
  if (process.env.NBACKUP_GZIP === 'zlib') return 'NBACKUP_GZIP=zlib asks for node:zlib';
  return nativeAddon() ? '' : addonProblem(ADDON);
}

function native(addon: CodecAddon, format: ArchiveFormat, engine: 'igzip' | 'libdeflate' | 'zstd', level: number): BlockCodec {
  const id = ENGINE_ID[engine];
  return {
    format,
    engine,
    engineLevel: level,
    blockSize: format === 'zstd' ? ZSTD_BLOCK : GZIP_BLOCK,
    bound: (length) => addon.bound(id, length),
    compress: (input, output) =>
      new Promise((resolve, reject) => addon.compress(id, input, output, level, (err, n) => (err ? reject(err) : resolve(output.subarray(0, n))))),
  };
}

function zlibGzip(level: number): BlockCodec {
  return {
    format: 'gzip',
    engine: 'zlib',
    engineLevel: level,
    blockSize: GZIP_BLOCK,
    // deflate's worst case is a few bytes per 16 KiB stored block, plus the gzip header and trailer.
    bound: (length) => length + (length >> 4) + 1024,
    compress: (input) =>
      new Promise((resolve, reject) => {
        // One output buffer big enough for the whole block: one thread-pool job per block.
        zlib.gzip(input, { level, chunkSize: Math.max(64 * 1024, input.length + (input.length >> 4) + 1024) }, (err, out) => (err ? reject(err) : resolve(out)));
      }),
  };
}

/**
 * The codec for a format and level. `onFallback` hears, once per call, why gzip runs on
 * node:zlib; zstd without the addon is an error that says what to install.
 */
export function codecFor(format: ArchiveFormat, level: number, onFallback?: (why: string) => void): BlockCodec {
  const { min, max } = COMPRESSION_LEVELS[format];
  if (!Number.isInteger(level) || level < min || level > max) {
    throw new NbackupError('config', `compression level ${level} is outside ${min}..${max} for ${format}`);
  }
  const addon = nativeAddon();
  if (format === 'zstd') {
    if (!addon) throw new NbackupError('config', `format zstd needs the native codec addon, which is unavailable (${nativeCodecProblem()}); install ${NATIVE_PACKAGES}, then npm ci`);
    return native(addon, 'zstd', 'zstd', level);
  }
  if (!addon) {
    onFallback?.(`native gzip is unavailable, using node:zlib (about 3× the CPU): ${nativeCodecProblem()}; install ${NATIVE_PACKAGES}, then npm ci`);
    return zlibGzip(level);
  }
  const e = GZIP_ENGINES[level];
  return native(addon, 'gzip', e.engine, e.level);
}

/** An engine at one of its own levels, for the benchmarks and the tests of every level. */
export function engineCodec(engine: Engine, level: number): BlockCodec | null {
  if (engine === 'zlib') return zlibGzip(level);
  const addon = nativeAddon();
  return addon ? native(addon, engine === 'zstd' ? 'zstd' : 'gzip', engine, level) : null;
}

/** What compresses, for `--version`: the engines and library versions, or why there are none. */
export function describeEngines(): string {
  const addon = nativeAddon();
  if (!addon) return `compression: node:zlib only (gzip); zstd unavailable. Native codecs missing: ${nativeCodecProblem()}. For full speed install ${NATIVE_PACKAGES}, then npm ci.`;
  const v = addon.versions();
  return `compression: gzip levels 1-3 ISA-L igzip ${v.isal}, 4-9 libdeflate ${v.libdeflate}; zstd levels 1-19 libzstd ${v.zstd}`;
}

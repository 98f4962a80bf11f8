import zlib from 'node:zlib';
import { addonPath, addonProblem, loadAddon } from '../../native/addons.js';

/**
 * Whole-block gzip compression on libuv's thread pool. Two codecs produce the same format (one
 * complete gzip member per block):
 *
 * - `libdeflate`: the native addon built from `src/native/` at install time (`binding.gyp`).
 *   About 2.7× less CPU than zlib at level 1 on the benchmark data, and slightly smaller output;
 *   the figures are in docs/design.md. Output goes into a caller-owned buffer, so a steady stream
 *   allocates nothing.
 * - `zlib`: `node:zlib`, used when the addon could not be built or loaded (a warning says so), or
 *   when `NBACKUP_GZIP=zlib` asks for it.
 */
export interface GzipCodec {
  readonly name: 'libdeflate' | 'zlib';
  /** Upper bound of the compressed size of `length` input bytes. */
  bound(length: number): number;
  /**
   * Compresses `input` into `output` (at least `bound(input.length)` bytes) on the thread pool.
   * Resolves with the gzip member: a view of `output`, or (zlib, which ignores `output`) a fresh
   * buffer. Neither buffer may be touched until it settles.
   */
  compress(input: Buffer, output: Buffer, level: number): Promise<Buffer>;
}

interface NativeAddon {
  compress(input: Buffer, output: Buffer, level: number, cb: (err: Error | null, n: number) => void): void;
  bound(length: number): number;
}

export const NATIVE_ADDON_PATH = addonPath('nbackup_gzip');

function loadNativeGzip(): NativeAddon | null {
  return loadAddon<NativeAddon>('nbackup_gzip');
}

export function nativeGzipProblem(): string {
  return addonProblem('nbackup_gzip');
}

const libdeflateCodec = (addon: NativeAddon): GzipCodec => ({
  name: 'libdeflate',
  bound: (length) => addon.bound(length),
  compress: (input, output, level) =>
    new Promise((resolve, reject) => {
      addon.compress(input, output, level, (err, n) => (err ? reject(err) : resolve(output.subarray(0, n))));
    }),
});

const zlibCodec: GzipCodec = {
  name: 'zlib',
  // deflate's worst case is a few bytes per 16 KiB stored block, plus the gzip header and trailer.
  bound: (length) => length + (length >> 4) + 1024,
  compress: (input, _output, level) =>
    new Promise((resolve, reject) => {
      // One output buffer big enough for the whole block: one thread-pool job per block.
      zlib.gzip(input, { level, chunkSize: Math.max(64 * 1024, input.length + (input.length >> 4) + 1024) }, (err, out) =>
        err ? reject(err) : resolve(out),
      );
    }),
};

/**
 * The codec to use: libdeflate when the addon is available, unless `NBACKUP_GZIP=zlib`.
 * `onFallback` is told once why zlib is used when libdeflate was wanted but is missing.
 */
export function selectGzipCodec(onFallback?: (why: string) => void): GzipCodec {
  const wanted = process.env.NBACKUP_GZIP ?? 'auto';
  if (wanted === 'zlib') return zlibCodec;
  const addon = loadNativeGzip();
  if (addon) return libdeflateCodec(addon);
  onFallback?.(`libdeflate gzip is unavailable, using node:zlib (slower): ${nativeGzipProblem()}`);
  return zlibCodec;
}

export function gzipCodecByName(name: 'libdeflate' | 'zlib'): GzipCodec | null {
  if (name === 'zlib') return zlibCodec;
  const addon = loadNativeGzip();
  return addon ? libdeflateCodec(addon) : null;
}

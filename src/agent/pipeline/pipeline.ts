import crypto from 'node:crypto';
import os from 'node:os';
import type { ScanWarning } from './scanner.js';
import { scanSources, scanWithRuns } from './scanner.js';
import type { BlockCodec } from './codecs.js';
import { ParallelCompressor } from './parallel-compressor.js';
import { TarPacker, type PackStats } from './tar-packer.js';
import { IndexBuilder } from './index-builder.js';

/**
 * scanner → tar → parallel compression (gzip or zstd) → SHA-256, delivering compressed bytes in
 * order to `deliver` (the ring buffer), whose promise is the backpressure for everything upstream.
 */
export interface PipelineOptions {
  sources: readonly string[];
  exclude: readonly string[];
  codec: BlockCodec;
  deliver: (compressed: Buffer) => Promise<void> | void;
  onWarning: (w: ScanWarning) => void;
  /** Things worth saying that are not problems (a source that is a symlink). */
  onNotice?: (n: ScanWarning) => void;
  /** Compression jobs in flight; default: one more than the CPU count. */
  maxInFlight?: number;
  signal?: AbortSignal;
  /** Hears the packer's live counters once, at the start (progress reads them as they grow). */
  onStart?: (pack: PackStats) => void;
}

export interface PipelineResult {
  sha256: Buffer;
  size: number;
  pack: PackStats;
  /** The archive's index (gzip members to send in order), or why there is none. */
  index: { parts: Buffer[] } | { dropped: string };
}

export async function runPipeline(opts: PipelineOptions): Promise<PipelineResult> {
  const blockSize = opts.codec.blockSize;
  const hash = crypto.createHash('sha256');
  let size = 0;
  const free: Buffer[] = [];
  const index = new IndexBuilder();
  const compressor = new ParallelCompressor({
    codec: opts.codec,
    blockSize,
    maxInFlight: opts.maxInFlight ?? Math.max(2, os.availableParallelism() + 1),
    recycle: (block) => {
      // Full-size blocks are reused; the short last block is not worth keeping.
      if (block.length === blockSize && block.byteOffset === 0 && free.length < 8) free.push(block);
    },
    deliver: (out) => {
      index.block(out.length);
      hash.update(out);
      size += out.length;
      return opts.deliver(out);
    },
  });
  const packer = new TarPacker(
    blockSize,
    { take: () => free.pop() ?? Buffer.allocUnsafeSlow(blockSize) },
    { push: (block) => compressor.push(block) },
    opts.onWarning,
    (m) => index.member(m),
    (text, members) => index.lines(text, members),
  );
  opts.onStart?.(packer.stats);
  // What the walk leaves out (a folder it cannot list, one swapped mid-walk) counts with what the
  // packer leaves out: the run's warning total is every path a warning named.
  const onScanWarning = (w: ScanWarning): void => {
    packer.stats.warnings++;
    opts.onWarning(w);
  };
  const scanOptions = { exclude: opts.exclude, onWarning: onScanWarning, onNotice: opts.onNotice };
  for (const item of packer.packsRuns ? scanWithRuns(opts.sources, scanOptions) : scanSources(opts.sources, scanOptions)) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const wait = item.type === 'run' ? packer.addRun(item) : packer.add(item);
    if (wait) await wait;
  }
  await packer.finish();
  await compressor.end();
  const sha256 = hash.digest();
  const parts = await index.finish({ format: opts.codec.format, blockSize, tarSize: packer.stats.tarBytes, archiveSize: size, sha256: sha256.toString('hex') });
  return { sha256, size, pack: packer.stats, index: parts ? { parts } : { dropped: index.dropped ?? 'no index' } };
}

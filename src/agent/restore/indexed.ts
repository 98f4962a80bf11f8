import { Readable } from 'node:stream';
import { ReadTarget } from '../../../protocol/constants.js';
import type { ArchiveInfo } from '../../../protocol/frames.js';
import { BlockDecoder, layoutProblem, type BlockLayout } from '../../archive/block-decoder.js';
import { readIndex, type IndexMember, type IndexReader } from '../../archive/index-format.js';
import type { IndexHeader } from '../../archive/index-header.js';
import { NbackupError } from '../../errors.js';
import { readRemote, type ReadEndpoint } from './read-client.js';

/**
 * Restoring a few members through an archive's index: the index says where each selected member
 * lies in the tar (from its first header record to the next member's), and which compressed
 * blocks hold those bytes. Only those blocks are read (one READ per run of neighbouring blocks),
 * each decompressed on its own (a block is a whole gzip member or zstd frame, with its own
 * checksum), and the members' bytes are put back together as a small tar stream that the usual
 * extractor reads, so an indexed restore and a streamed one restore the very same way.
 */
export interface Span {
  /** Tar offsets: [start, end). */
  start: number;
  end: number;
}

export interface BlockRun {
  first: number;
  last: number;
  spans: Span[];
}

export interface IndexedPlan {
  header: IndexHeader;
  blocks: number[];
  runs: BlockRun[];
  members: number;
  /** Compressed bytes the runs read. */
  bytes: number;
}

/** Blocks between two runs read anyway rather than opening another connection. */
const GAP_BLOCKS = 1;

/** The spans of the members `select` picks, neighbours merged, in tar order. */
export async function selectSpans(members: AsyncIterable<IndexMember>, tarSize: number, select: (name: string) => boolean): Promise<{ spans: Span[]; count: number }> {
  const spans: Span[] = [];
  let open: IndexMember | null = null;
  let count = 0;
  const close = (end: number): void => {
    if (!open) return;
    const last = spans[spans.length - 1];
    if (last && last.end === open.offset) last.end = end;
    else spans.push({ start: open.offset, end });
    open = null;
  };
  for await (const m of members) {
    close(m.offset);
    if (select(m.name.toString('utf8'))) {
      open = m;
      count++;
    }
  }
  close(tarSize);
  return { spans, count };
}

/** Groups spans into runs of blocks to read (a span never straddles two runs). */
export function blockRuns(spans: readonly Span[], blockSize: number): BlockRun[] {
  const runs: BlockRun[] = [];
  for (const s of spans) {
    const first = Math.floor(s.start / blockSize);
    const last = Math.floor((s.end - 1) / blockSize);
    const cur = runs[runs.length - 1];
    if (cur && first <= cur.last + 1 + GAP_BLOCKS) {
      cur.last = Math.max(cur.last, last);
      cur.spans.push(s);
    } else runs.push({ first, last, spans: [s] });
  }
  return runs;
}

/**
 * Opens the archive's index and checks that it describes this archive (size, SHA-256, format)
 * with a layout a BlockDecoder can follow; `use` reads it before the connection is closed.
 */
export async function withIndex<T>(ep: ReadEndpoint, archive: ArchiveInfo, format: 'gzip' | 'zstd', use: (idx: IndexReader) => Promise<T>): Promise<T> {
  const { stream } = await readRemote(ep, archive, ReadTarget.INDEX);
  try {
    const idx = await readIndex(stream);
    const h = idx.header;
    if (h.archiveSize !== archive.size || (archive.sha256 && h.sha256 !== archive.sha256.toString('hex')) || h.format !== format) {
      throw new NbackupError('checksum', 'index: it describes another archive (size, SHA-256 or format differ)');
    }
    const problem = layoutProblem(h, idx.blocks);
    if (problem) throw new NbackupError('checksum', `index: ${problem}`);
    return await use(idx);
  } finally {
    stream.destroy();
  }
}

/** The whole archive's block layout, for decompressing its blocks in parallel. */
export async function wholeLayout(ep: ReadEndpoint, archive: ArchiveInfo, format: 'gzip' | 'zstd'): Promise<BlockLayout> {
  return withIndex(ep, archive, format, async ({ header: h, blocks }) => ({ format, blocks, firstBlock: 0, blockSize: h.blockSize, tarSize: h.tarSize }));
}

/** Reads the archive's index and plans the restore of what `select` picks. */
export async function planIndexed(ep: ReadEndpoint, archive: ArchiveInfo, format: 'gzip' | 'zstd', select: (name: string) => boolean): Promise<IndexedPlan> {
  return withIndex(ep, archive, format, async (idx) => {
    const h = idx.header;
    const { spans, count } = await selectSpans(idx.members, h.tarSize, select);
    const runs = blockRuns(spans, h.blockSize);
    const starts = offsets(idx.blocks);
    const bytes = runs.reduce((n, r) => n + starts[r.last + 1] - starts[r.first], 0);
    return { header: h, blocks: idx.blocks, runs, members: count, bytes };
  });
}

function offsets(blocks: readonly number[]): number[] {
  const out = [0];
  for (const b of blocks) out.push(out[out.length - 1] + b);
  return out;
}

/** The selected members as one tar stream (their bytes in order, then the end-of-archive records). */
export function plannedTar(ep: ReadEndpoint, archive: ArchiveInfo, plan: IndexedPlan, format: 'gzip' | 'zstd'): Readable {
  const starts = offsets(plan.blocks);
  const { blockSize, tarSize } = plan.header;
  async function* bytes(): AsyncGenerator<Buffer> {
    for (const run of plan.runs) {
      const { stream } = await readRemote(ep, archive, ReadTarget.ARCHIVE, starts[run.first], starts[run.last + 1] - starts[run.first]);
      const layout = { format, blocks: plan.blocks.slice(run.first, run.last + 1), firstBlock: run.first, blockSize, tarSize };
      const tar = stream.pipe(new BlockDecoder(layout));
      stream.on('error', (err) => tar.destroy(err));
      let pos = run.first * blockSize;
      let si = 0;
      try {
        for await (const chunk of tar as AsyncIterable<Buffer>) {
          const end = pos + chunk.length;
          while (si < run.spans.length && run.spans[si].start < end) {
            const s = run.spans[si];
            const from = Math.max(s.start, pos);
            const to = Math.min(s.end, end);
            if (to > from) yield chunk.subarray(from - pos, to - pos);
            if (s.end > end) break;
            si++;
          }
          pos = end;
        }
      } finally {
        stream.destroy();
      }
      const want = Math.min((run.last + 1) * blockSize, tarSize);
      if (pos !== want) throw new NbackupError('checksum', `blocks ${run.first}–${run.last} hold ${pos - run.first * blockSize} tar bytes, the index says ${want - run.first * blockSize}: archive and index disagree`);
    }
    yield Buffer.alloc(1024);
  }
  return Readable.from(bytes(), { objectMode: false });
}

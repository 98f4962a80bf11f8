import crypto from 'node:crypto';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import picomatch from 'picomatch';
import { ReadTarget } from '../../../protocol/constants.js';
import type { ArchiveInfo } from '../../../protocol/frames.js';
import { archiveTime } from '../../archive/names.js';
import type { AgentConfig } from '../../config/index.js';
import { formatBytes, formatDuration } from '../../config/units.js';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';
import { decompressor } from '../../archive/decompress.js';
import { Extractor, type ExtractStats } from './extract.js';
import { diskFault } from './target.js';
import { archivePath, listRemote, readRemote, type ReadEndpoint } from './read-client.js';
import { TarReader } from '../../archive/tar-reader.js';
import { planIndexed, plannedTar, wholeLayout, type IndexedPlan } from './indexed.js';
import { BlockDecoder, type BlockLayout } from '../../archive/block-decoder.js';

/** `list`, `restore` and `find` of nbackup-agent: the agent's own backups, over the read side (protocol v5). */

export function formatOf(name: string): 'gzip' | 'zstd' {
  return name.endsWith('.tar.zst') ? 'zstd' : 'gzip';
}

/** `2026-11-22T01-39-38-242.tar.gz` → `2026-11-22 01:39:38.242 UTC`. */
export function shownTime(name: string): string {
  const t = archiveTime(name);
  return t === null ? name : new Date(t).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

/** The table of `list`: one block per backup, oldest first. */
export function listTable(archives: readonly ArchiveInfo[], now = Date.now()): string {
  if (archives.length === 0) return 'no backups on the server for this agent\n';
  const byBackup = new Map<string, ArchiveInfo[]>();
  for (const a of archives) byBackup.set(a.backup, [...(byBackup.get(a.backup) ?? []), a]);
  const out: string[] = [];
  for (const [backup, rows] of [...byBackup].sort(([a], [b]) => (a < b ? -1 : 1))) {
    rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    out.push(`backup ${backup}: ${rows.length} archive${rows.length === 1 ? '' : 's'}`);
    const table = [['TIMESTAMP', 'AGE', 'SIZE', 'FILES', 'FORMAT', 'STORAGE', 'SHA-256']];
    for (const a of rows) {
      const t = archiveTime(a.name);
      table.push([
        shownTime(a.name),
        t === null ? '?' : formatDuration(Math.max(0, Math.floor((now - t) / 1000) * 1000)),
        formatBytes(a.size),
        a.files === null ? '-' : String(a.files),
        formatOf(a.name),
        a.storage,
        a.sha256 ? a.sha256.toString('hex').slice(0, 16) : '-',
      ]);
    }
    const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
    for (const r of table) out.push(`  ${r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()}`);
  }
  return `${out.join('\n')}\n`;
}

/** The archive `--at` names among a backup's: `latest`, a name, or a name without its extension. */
export function pickArchive(archives: readonly ArchiveInfo[], backup: string, at: string): ArchiveInfo {
  const mine = archives.filter((a) => a.backup === backup).sort((a, b) => (a.name < b.name ? -1 : 1));
  if (mine.length === 0) throw new NbackupError('source', `no backups of "${backup}" on the server`);
  if (at === 'latest') return mine[mine.length - 1];
  const found = mine.find((a) => a.name === at || a.name.replace(/\.tar\.(gz|zst)$/, '') === at);
  if (!found) throw new NbackupError('usage', `no archive "${at}" in backup "${backup}"; nbackup-agent list --backup ${backup} shows them`);
  return found;
}

/** Patterns as `find` and `restore` take them: globs on member names, a leading "/" ignored, a folder's name selecting what is under it. */
export function memberMatcher(patterns: readonly string[]): ((name: string) => boolean) | undefined {
  if (patterns.length === 0) return undefined;
  const cleaned = patterns.map((p) => p.replace(/^\/+/, '').replace(/\/+$/, ''));
  // A pattern without glob characters is a path: compared as text, which is much faster over an index.
  const isGlob = (p: string): boolean => p.includes('\\') || picomatch.scan(p).isGlob;
  const literals = cleaned.filter((p) => !isGlob(p));
  const globs = cleaned.filter(isGlob);
  const match = globs.length > 0 ? picomatch(globs, { dot: true }) : null;
  return (name) => {
    for (const l of literals) if (name === l || (name.startsWith(l) && name.charCodeAt(l.length) === 0x2f)) return true;
    if (!match) return false;
    if (match(name)) return true;
    // A match on any folder above it selects the member too.
    for (let i = name.indexOf('/'); i > 0; i = name.indexOf('/', i + 1)) if (match(name.slice(0, i))) return true;
    return false;
  };
}

/** Counts and hashes bytes on their way through. */
class Tap extends Transform {
  readonly hash = crypto.createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _e: BufferEncoding, done: (err: null, chunk: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

function checkSha(a: ArchiveInfo, tap: Tap): void {
  if (tap.bytes !== a.size) throw new NbackupError('checksum', `read ${tap.bytes} bytes of ${a.name}, expected ${a.size}`);
  if (!a.sha256) return;
  const got = tap.hash.digest();
  if (!got.equals(a.sha256)) {
    throw new NbackupError('checksum', `SHA-256 of ${a.name} is ${got.toString('hex')}, the server recorded ${a.sha256.toString('hex')}: the archive is damaged`);
  }
}

export interface RestoreOptions {
  backup: string;
  at: string;
  to?: string;
  stdout: boolean;
  force: boolean;
  patterns: string[];
  onProblem: (path: string, message: string) => void;
  /** Hears why the index was not used, when there is one. */
  onNotice?: (message: string) => void;
  /** Hears the extractor once the target folder is open (a signal handler removes the file it is writing). */
  onExtractor?: (extractor: Extractor) => void;
}

/** What an indexed restore read: the index, then `bytes` of `blocks` of the archive's `totalBlocks`. */
export interface IndexedRead {
  indexBytes: number;
  bytes: number;
  blocks: number;
  totalBlocks: number;
  members: number;
}

export interface RestoreResult {
  archive: ArchiveInfo;
  stats: ExtractStats | null;
  /** Whether the whole archive was read and its SHA-256 checked against the one recorded. */
  verified: boolean;
  /** Set when only the blocks holding the selected members were read, through the index. */
  indexed: IndexedRead | null;
  /** Blocks decompressed in parallel on a full restore (laid out by the index); null when it was one stream. */
  parallelBlocks: number | null;
}

/** Restoring part of an archive that has an index reads only the blocks it needs, unless that is most of them anyway. */
async function indexedPlan(ep: ReadEndpoint, archive: ArchiveInfo, o: RestoreOptions, select: (name: string) => boolean): Promise<IndexedPlan | null> {
  if (o.patterns.length === 0 || archive.indexSize === 0) return null;
  try {
    const plan = await planIndexed(ep, archive, formatOf(archive.name), select);
    return plan.bytes <= archive.size / 2 ? plan : null;
  } catch (err) {
    o.onNotice?.(`the index of ${archive.name} cannot be used (${errorMessage(err)}); reading the whole archive`);
    return null;
  }
}

/** The whole archive's block layout from its index, so that its blocks are decompressed in parallel; null without a usable index. */
async function blockLayout(ep: ReadEndpoint, archive: ArchiveInfo, o: RestoreOptions): Promise<BlockLayout | null> {
  if (archive.indexSize === 0) return null;
  try {
    return await wholeLayout(ep, archive, formatOf(archive.name));
  } catch (err) {
    o.onNotice?.(`the index of ${archive.name} cannot be used (${errorMessage(err)}); decompressing the archive as one stream`);
    return null;
  }
}

/** A failed write to stdout as one line: its reader gone (EPIPE), or the file it goes to full. */
function stdoutError(archive: ArchiveInfo, err: unknown): unknown {
  // The read side fails with errors of its own; an error with an errno came from stdout.
  if (err instanceof NbackupError || errnoCode(err) === undefined) return err;
  if (errnoCode(err) === 'EPIPE') return new NbackupError('aborted', `stdout was closed by its reader before the end of ${archivePath(archive)}: the archive was not written whole`, { cause: err });
  return new NbackupError('storage', `cannot write ${archivePath(archive)} to stdout: ${diskFault(err) ?? errorMessage(err)}; the archive was not written whole`, { cause: err });
}

/** Streams one archive from the server and extracts it (or writes it to stdout). */
export async function restore(ep: ReadEndpoint, config: AgentConfig, o: RestoreOptions): Promise<RestoreResult> {
  if (!config.backups.some((b) => b.name === o.backup)) {
    throw new NbackupError('usage', `"${o.backup}" is not a backup entry of this agent (${config.backups.map((b) => b.name).join(', ')})`);
  }
  const archive = pickArchive(await listRemote(ep, o.backup), o.backup, o.at);
  const tap = new Tap();
  if (o.stdout) {
    const { stream } = await readRemote(ep, archive, ReadTarget.ARCHIVE);
    await pipeline(stream, tap, process.stdout, { end: false }).catch((err: unknown) => {
      throw stdoutError(archive, err);
    });
    checkSha(archive, tap);
    return { archive, stats: null, verified: archive.sha256 !== null, indexed: null, parallelBlocks: null };
  }
  if (!o.to) throw new NbackupError('usage', 'restore needs --to DIR (or --stdout)');
  const select = memberMatcher(o.patterns);
  const extractor = new Extractor({
    dir: path.resolve(o.to),
    select,
    force: o.force,
    owners: process.getuid?.() === 0,
    onProblem: o.onProblem,
  });
  o.onExtractor?.(extractor);
  const plan = select ? await indexedPlan(ep, archive, o, select) : null;
  if (plan) {
    await extractor.run(new TarReader(plannedTar(ep, archive, plan, formatOf(archive.name))));
    extractor.finish();
    const blocks = plan.runs.reduce((n, r) => n + r.last - r.first + 1, 0);
    const indexed = { indexBytes: archive.indexSize, bytes: plan.bytes, blocks, totalBlocks: plan.blocks.length, members: plan.members };
    return { archive, stats: extractor.stats, verified: false, indexed, parallelBlocks: null };
  }
  const layout = await blockLayout(ep, archive, o);
  const { stream } = await readRemote(ep, archive, ReadTarget.ARCHIVE);
  const tarStream = stream.pipe(tap).pipe(layout ? new BlockDecoder(layout) : decompressor(formatOf(archive.name), archivePath(archive)));
  stream.on('error', (err) => tarStream.destroy(err));
  tap.on('error', (err) => tarStream.destroy(err));
  const reader = new TarReader(tarStream);
  await extractor.run(reader);
  extractor.finish();
  // Whatever follows the end-of-archive records is still read, so that the SHA-256 covers it all.
  await reader.drain();
  checkSha(archive, tap);
  return { archive, stats: extractor.stats, verified: archive.sha256 !== null, indexed: null, parallelBlocks: layout ? layout.blocks.length : null };
}

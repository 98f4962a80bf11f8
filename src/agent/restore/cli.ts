import { ReadTarget } from '../../../protocol/constants.js';
import type { ArchiveInfo } from '../../../protocol/frames.js';
import { loadAgentConfig } from '../../config/index.js';
import { formatBytes } from '../../config/units.js';
import { NbackupError, errorMessage, type ErrorKind } from '../../errors.js';
import { readIndex } from '../../archive/index-format.js';
import { EXIT_BACKUP_FAILED } from '../../exit-codes.js';
import { loadTlsMaterial } from '../../tls/material.js';
import { decompressor } from '../../archive/decompress.js';
import { realName } from './member-name.js';
import { printableName, printableText } from '../../printable.js';
import { formatOf, listTable, memberMatcher, restore, shownTime, type RestoreResult } from './commands.js';
import { RestoreInterrupt } from './interrupt.js';
import { archivePath, listRemote, readRemote, type ReadEndpoint } from './read-client.js';
import { TarReader } from '../../archive/tar-reader.js';

async function endpoint(configPath: string): Promise<{ ep: ReadEndpoint; config: Awaited<ReturnType<typeof loadAgentConfig>> }> {
  const config = await loadAgentConfig(configPath);
  const material = loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.client_cert, key: config.tls.client_key });
  return { config, ep: { server: config.server, material, agent: config.agent.name, timeoutMs: config.retry.read_timeout } };
}

/** `list [--backup B]`. */
export async function runList(configPath: string, backup: string | undefined): Promise<number> {
  const { ep } = await endpoint(configPath);
  process.stdout.write(listTable(await listRemote(ep, backup ?? '')));
  return 0;
}

/** `restore --backup B [--at T] (--to DIR | --stdout) [--force] [PATTERN…]`. */
export async function runRestore(
  configPath: string,
  o: { backup: string; at: string; to?: string; stdout: boolean; force: boolean; patterns: string[] },
): Promise<number> {
  if (o.stdout && o.to) throw new NbackupError('usage', '--stdout and --to exclude each other');
  if (o.stdout && o.patterns.length) throw new NbackupError('usage', '--stdout writes the whole archive; patterns go with --to');
  if (o.stdout && process.stdout.isTTY) throw new NbackupError('usage', '--stdout writes a compressed archive: pipe it (| tar -xzf -), not to a terminal');
  const say = (line: string): void => void process.stderr.write(`nbackup-agent: ${printableText(line)}\n`);
  const interrupt = o.to ? new RestoreInterrupt(o.to, say) : null;
  const problems = new ProblemLines(say);
  let r: RestoreResult;
  try {
    const { ep, config } = await endpoint(configPath);
    r = await restore(ep, config, { ...o, onProblem: problems.add, onNotice: say, onExtractor: (x) => interrupt?.watch(x) });
  } finally {
    interrupt?.remove();
    problems.end();
  }
  const what = `${r.archive.backup} ${shownTime(r.archive.name)} (${r.archive.storage}/${r.archive.name})`;
  const x = r.indexed;
  const check = x
    ? `read through its index: ${x.blocks} of ${x.totalBlocks} blocks (${formatBytes(x.bytes)} + ${formatBytes(x.indexBytes)} of index), each block's checksum verified (the archive's SHA-256 is checked on a full restore)`
    : `${r.verified ? 'SHA-256 verified' : 'no SHA-256 recorded for it: not verified'}${r.parallelBlocks ? `; its ${r.parallelBlocks} blocks decompressed in parallel, as its index lays them out` : ''}`;
  if (r.stats) {
    const s = r.stats;
    const parts = [`${s.files} files (${formatBytes(s.bytes)}), ${s.directories} folders, ${s.symlinks} symlinks, ${s.hardlinks} hard links, ${s.others} others`];
    if (s.alreadyThere) parts.push(`${s.alreadyThere} members already there as in the archive, left alone`);
    parts.push(check);
    if (problems.count) parts.push(`${problems.count} members NOT restored (above)${s.differing ? `, of which ${s.differing} because what is there differs (--force replaces it)` : ''}`);
    process.stderr.write(`restored ${what} into ${o.to}: ${parts.join('; ')}\n`);
    const found = s.files + s.directories + s.symlinks + s.hardlinks + s.others + s.alreadyThere;
    if (o.patterns.length > 0 && found === 0 && problems.count === 0) {
      process.stderr.write(`nbackup-agent: nothing in ${r.archive.name} matches ${o.patterns.map((p) => JSON.stringify(p)).join(' ')}\n`);
      return EXIT_BACKUP_FAILED;
    }
  } else {
    process.stderr.write(`wrote ${what} to stdout; ${check}\n`);
  }
  return problems.count > 0 ? EXIT_BACKUP_FAILED : 0;
}

/** Members named one by one when they are not restored; past these, only counted. */
const NAMED_PROBLEMS = 20;

/** The problem lines of a restore, bounded: the first NAMED_PROBLEMS by name, then one line with the count of the rest. */
class ProblemLines {
  count = 0;
  constructor(private readonly say: (line: string) => void) {}

  readonly add = (member: string, message: string): void => {
    if (++this.count <= NAMED_PROBLEMS) this.say(`${member}: ${message}`);
  };

  end(): void {
    if (this.count > NAMED_PROBLEMS) this.say(`… and ${this.count - NAMED_PROBLEMS} more members not restored (the first ${NAMED_PROBLEMS} are named above)`);
  }
}

/** Errors that concern one archive (damaged, gone, refused); anything else (the network, a bug) ends `find`. */
const ARCHIVE_PROBLEMS: readonly ErrorKind[] = ['checksum', 'source', 'rejected', 'protocol', 'server', 'storage'];

/**
 * `find PATTERN [--backup B]`: every archive holding a matching path, with its size and mtime
 * there. An archive that cannot be read is named on stderr and the search goes on (so one damaged
 * archive does not hide the hits of the others); the exit status then says something was missed.
 */
export async function runFind(configPath: string, pattern: string, backup: string | undefined): Promise<number> {
  const { ep } = await endpoint(configPath);
  const match = memberMatcher([pattern])!;
  const archives = await listRemote(ep, backup ?? '');
  let hits = 0;
  let unreadable = 0;
  for (const a of archives) {
    try {
      await eachMember(ep, a, match, (m) => {
        hits++;
        process.stdout.write(`${a.backup}  ${shownTime(a.name)}  ${m.type.padEnd(9)}  ${String(m.size).padStart(12)}  ${new Date(m.mtime * 1000).toISOString()}  ${m.name}\n`);
      });
    } catch (err) {
      if (!(err instanceof NbackupError) || !ARCHIVE_PROBLEMS.includes(err.kind)) throw err;
      unreadable++;
      const where = archivePath(a);
      const why = err.message.includes(where) ? err.message : `${where}: ${err.message}`;
      process.stderr.write(`nbackup-agent: ${printableText(why)}; archive skipped\n`);
    }
  }
  const searched = archives.length - unreadable;
  if (unreadable > 0) process.stderr.write(`nbackup-agent: ${unreadable} of ${archives.length} archives could not be searched (above)\n`);
  if (hits === 0) process.stderr.write(`nbackup-agent: nothing matches ${JSON.stringify(pattern)} in ${searched} archive${searched === 1 ? '' : 's'}\n`);
  return hits > 0 && unreadable === 0 ? 0 : EXIT_BACKUP_FAILED;
}

interface MemberRow {
  name: string;
  type: string;
  size: number;
  mtime: number;
}

/** Each member of one archive: from its index when it has a usable one, else from its tar headers. */
async function eachMember(ep: ReadEndpoint, a: ArchiveInfo, match: (name: string) => boolean, onMember: (m: MemberRow) => void): Promise<void> {
  if (a.indexSize > 0) {
    const rows: MemberRow[] = [];
    const { stream } = await readRemote(ep, a, ReadTarget.INDEX);
    try {
      const idx = await readIndex(stream);
      for await (const m of idx.members) {
        if (match(m.name.toString('utf8'))) rows.push({ name: printableName(m.name), type: m.type, size: m.size, mtime: m.mtime });
      }
      // Only a whole index is believed: a damaged one is read past, to the archive itself.
      for (const r of rows) onMember(r);
      return;
    } catch (err) {
      process.stderr.write(`nbackup-agent: the index of ${a.name} cannot be used (${printableText(errorMessage(err))}); reading the archive\n`);
    } finally {
      stream.destroy();
    }
  }
  await eachTarMember(ep, a, match, onMember);
}

/** Each member of one archive, from its tar headers (the data is decompressed and skipped). */
async function eachTarMember(ep: ReadEndpoint, a: ArchiveInfo, match: (name: string) => boolean, onMember: (m: MemberRow) => void): Promise<void> {
  const { stream } = await readRemote(ep, a, ReadTarget.ARCHIVE);
  const tar = stream.pipe(decompressor(formatOf(a.name), archivePath(a)));
  stream.on('error', (err) => tar.destroy(err));
  const reader = new TarReader(tar);
  try {
    for (let m = await reader.next(); m !== null; m = await reader.next()) {
      const real = realName(m);
      if (!match(real.name.toString('utf8'))) continue;
      onMember({ name: printableName(real.name), type: m.type, size: real.sparse ? real.sparse.realSize : m.size, mtime: m.mtime });
    }
  } finally {
    await reader.close();
    stream.destroy();
  }
}

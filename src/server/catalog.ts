import fs from 'node:fs';
import path from 'node:path';
import { nameProblem } from '../../protocol/names.js';
import type { ArchiveInfo } from '../../protocol/frames.js';
import { INDEX_SUFFIX, readIndexHeader } from '../archive/index-header.js';
import { errnoCode } from '../errors.js';
import { isArchiveName } from '../archive/names.js';

/**
 * What lies beside each committed archive: `<archive>.sha256` (the SHA-256 the agent sent and the
 * server verified, in `sha256sum` format, so `sha256sum -c` checks it by hand) and, once the agent
 * has sent it, `<archive>.index.gz` (index.ts). Both are written atomically and go with the archive
 * when it is rotated out.
 */
export const SHA_SUFFIX = '.sha256';
export const SIDECAR_SUFFIXES = [SHA_SUFFIX, INDEX_SUFFIX] as const;

/** Writes `dir/name` whole or not at all: a hidden temporary file, fsync, rename. The caller fsyncs `dir`. */
export async function writeFileAtomic(dir: string, name: string, data: Buffer | string): Promise<void> {
  const tmp = path.join(dir, `.${name}.tmp`);
  const fh = await fs.promises.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o640);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await fs.promises.rename(tmp, path.join(dir, name));
}

/** The `sha256sum` line of an archive. */
export function shaLine(archive: string, sha256Hex: string): string {
  return `${sha256Hex}  ${path.basename(archive)}\n`;
}

/** The SHA-256 recorded at commit, or null when there is none (or it cannot be read). */
export async function recordedSha(archive: string): Promise<Buffer | null> {
  try {
    const text = await fs.promises.readFile(archive + SHA_SUFFIX, 'utf8');
    const m = /^([0-9a-f]{64}) [ *](.+)\n?$/.exec(text);
    return m && m[2] === path.basename(archive) ? Buffer.from(m[1], 'hex') : null;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** Deletes an archive, then what lies beside it. */
export async function removeArchive(archive: string): Promise<void> {
  await fs.promises.rm(archive, { force: true });
  for (const s of SIDECAR_SUFFIXES) await fs.promises.rm(archive + s, { force: true });
}

/** Sidecars whose archive is gone (a crash between the two deletions), in one backup folder. */
export function orphanSidecars(names: readonly string[]): string[] {
  const archives = new Set(names.filter(isArchiveName));
  return names.filter((n) => SIDECAR_SUFFIXES.some((s) => n.endsWith(s) && isArchiveName(n.slice(0, -s.length)) && !archives.has(n.slice(0, -s.length))));
}

/** Where a storage keeps its archives (Storage, without importing it). */
export interface ArchiveHome {
  readonly name: string;
  readonly baseDir: string;
  backupDir(agent: string, backup: string): string;
}

/** One archive as a LIST answer describes it. */
export async function describeArchive(storage: ArchiveHome, backup: string, archive: string): Promise<ArchiveInfo | null> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(archive);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null; // rotated out meanwhile
    throw err;
  }
  if (!st.isFile()) return null;
  let files: number | null = null;
  let indexSize = 0;
  try {
    const ist = await fs.promises.lstat(archive + INDEX_SUFFIX);
    if (ist.isFile()) {
      files = (await readIndexHeader(archive + INDEX_SUFFIX)).members;
      indexSize = ist.size;
    }
  } catch {
    // No index, or one that cannot be read: the archive is listed without it.
    files = null;
    indexSize = 0;
  }
  return { storage: storage.name, backup, name: path.basename(archive), size: st.size, sha256: await recordedSha(archive), files, indexSize };
}

/** Names in `dir` that can be an agent's or a backup's, sorted. */
async function validNames(dir: string): Promise<string[]> {
  return (await dirEntries(dir)).filter((n) => nameProblem(n) === null).sort();
}

/**
 * The backup folders of a storage: of one agent or all (`agent` undefined), of one backup or all
 * (`backup` undefined), in name order, with the names of the archives in each, oldest first.
 */
export async function backupFolders(
  storage: ArchiveHome,
  agent?: string,
  backup?: string,
): Promise<{ agent: string; backup: string; dir: string; archives: string[] }[]> {
  const out: { agent: string; backup: string; dir: string; archives: string[] }[] = [];
  for (const a of agent === undefined ? await validNames(storage.baseDir) : [agent]) {
    for (const b of backup === undefined ? await validNames(path.join(storage.baseDir, a)) : [backup]) {
      const dir = storage.backupDir(a, b);
      out.push({ agent: a, backup: b, dir, archives: (await dirEntries(dir)).filter(isArchiveName).sort() });
    }
  }
  return out;
}

/** An agent's archives in one storage, oldest first per backup; `backup` '' means every backup. */
export async function listArchives(storage: ArchiveHome, agent: string, backup: string): Promise<ArchiveInfo[]> {
  const out: ArchiveInfo[] = [];
  for (const f of await backupFolders(storage, agent, backup === '' ? undefined : backup)) {
    for (const n of f.archives) {
      const info = await describeArchive(storage, f.backup, path.join(f.dir, n));
      if (info) out.push(info);
    }
  }
  return out;
}

/** Names of the real folders and files in `dir` (no symlinks); none when it does not exist. */
export async function dirEntries(dir: string): Promise<string[]> {
  try {
    const ents = await fs.promises.readdir(dir, { withFileTypes: true });
    return ents.filter((e) => !e.isSymbolicLink()).map((e) => e.name);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}

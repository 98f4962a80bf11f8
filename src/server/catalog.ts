import fs from 'node:fs';
import path from 'node:path';
import { nameProblem } from '../../protocol/names.js';
import type { ArchiveInfo } from '../../protocol/frames.js';
import { INDEX_SUFFIX, readIndexHeader } from '../archive/index-header.js';
import { errnoCode, errorMessage } from '../errors.js';
import { isArchiveName } from '../archive/names.js';
import { entryKind, OddEntries, OddEntryError, readSmallRegular, realFolder, removeFileEntry, SAFE_OPEN } from './storage-entries.js';

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
  const fh = await fs.promises.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | SAFE_OPEN, 0o640);
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

/** What `<archive>.sha256` says: the SHA-256, nothing (no such file), or why it cannot be used. */
export type RecordedSha = { sha: Buffer } | { none: true } | { bad: string };

/** The longest `.sha256` the server writes is 64 + 2 + a 33-byte name + 1; anything much longer is not one. */
const SHA_FILE_LIMIT = 4096;

export async function readRecordedSha(archive: string): Promise<RecordedSha> {
  let text: string;
  try {
    text = (await readSmallRegular(archive + SHA_SUFFIX, SHA_FILE_LIMIT)).toString('utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { none: true };
    return { bad: err instanceof OddEntryError ? err.why : errorMessage(err) };
  }
  const m = /^([0-9a-f]{64}) [ *](.+)\n?$/.exec(text);
  if (!m || m[2] !== path.basename(archive)) return { bad: 'is not a sha256sum line for this archive' };
  return { sha: Buffer.from(m[1], 'hex') };
}

/** The SHA-256 recorded at commit, or null when there is none (or it cannot be used). */
export async function recordedSha(archive: string): Promise<Buffer | null> {
  const r = await readRecordedSha(archive);
  return 'sha' in r ? r.sha : null;
}

/**
 * Deletes an archive, then what lies beside it. Only a regular file is deleted as an archive, and
 * a sidecar only when it is a file or a symlink (the link, not its target); anything else is left
 * and an OddEntryError says so.
 */
export async function removeArchive(archive: string): Promise<void> {
  let st: fs.Stats | null = null;
  try {
    st = await fs.promises.lstat(archive);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (st && !st.isFile()) throw new OddEntryError(archive, `is ${entryKind(st)}, not an archive; left alone`);
  if (st) await removeFileEntry(archive);
  for (const s of SIDECAR_SUFFIXES) await removeFileEntry(archive + s);
}

/**
 * Sidecars whose archive is gone (a crash between the two deletions), in one backup folder: files
 * or symlinks named `<archive name><suffix>` with no regular file of that archive name beside them.
 */
export function orphanSidecars(entries: readonly fs.Dirent[]): string[] {
  const archives = new Set(entries.filter((e) => e.isFile() && isArchiveName(e.name)).map((e) => e.name));
  return entries
    .filter((e) => e.isFile() || e.isSymbolicLink())
    .map((e) => e.name)
    .filter((n) => SIDECAR_SUFFIXES.some((s) => n.endsWith(s) && isArchiveName(n.slice(0, -s.length)) && !archives.has(n.slice(0, -s.length))));
}

/**
 * The archives in one backup folder: regular files with an archive name, sorted (oldest first).
 * An archive name on anything else (a symlink, a folder, a FIFO…) goes to `odd`, never to the caller.
 */
export async function archivesIn(dir: string, odd?: OddEntries): Promise<string[]> {
  const out: string[] = [];
  for (const e of await folderEntries(dir)) {
    if (!isArchiveName(e.name)) continue;
    if (e.isFile()) out.push(e.name);
    else odd?.add(path.join(dir, e.name), `is ${entryKind(e)}, not an archive; skipped`);
  }
  return out.sort();
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

/**
 * Names in `dir` of real folders that can be an agent's or a backup's, sorted; a symlink (or
 * anything but a folder) with such a name goes to `odd`.
 */
async function folderNames(dir: string, odd?: OddEntries): Promise<string[]> {
  const out: string[] = [];
  for (const e of await folderEntries(dir)) {
    if (nameProblem(e.name) !== null) continue;
    if (e.isDirectory()) out.push(e.name);
    else if (e.isSymbolicLink()) odd?.add(path.join(dir, e.name), `is a symlink (to ${await fs.promises.readlink(path.join(dir, e.name)).catch(() => '?')}); the server follows no symlink in a storage`);
  }
  return out.sort();
}

/**
 * The backup folders of a storage: of one agent or all (`agent` undefined), of one backup or all
 * (`backup` undefined), in name order, with the names of the archives in each, oldest first. Only
 * real folders are walked: a symlinked agent or backup folder, and whatever is not an archive
 * though named like one, go to `odd` (the caller says so), never outside `base_dir`.
 */
export async function backupFolders(
  storage: ArchiveHome,
  agent?: string,
  backup?: string,
  odd: OddEntries = new OddEntries(),
): Promise<{ agent: string; backup: string; dir: string; archives: string[] }[]> {
  const out: { agent: string; backup: string; dir: string; archives: string[] }[] = [];
  const real = async (names: string[]): Promise<boolean> => {
    try {
      await realFolder(storage.baseDir, names);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
      odd.addError(err);
      return false;
    }
  };
  const agents = agent === undefined ? await folderNames(storage.baseDir, odd) : (await real([agent])) ? [agent] : [];
  for (const a of agents) {
    const backups = backup === undefined ? await folderNames(path.join(storage.baseDir, a), odd) : (await real([a, backup])) ? [backup] : [];
    for (const b of backups) {
      const dir = storage.backupDir(a, b);
      out.push({ agent: a, backup: b, dir, archives: await archivesIn(dir, odd) });
    }
  }
  return out;
}

/** An agent's archives in one storage, oldest first per backup; `backup` '' means every backup. */
export async function listArchives(storage: ArchiveHome, agent: string, backup: string, odd?: OddEntries): Promise<ArchiveInfo[]> {
  const out: ArchiveInfo[] = [];
  for (const f of await backupFolders(storage, agent, backup === '' ? undefined : backup, odd)) {
    for (const n of f.archives) {
      const info = await describeArchive(storage, f.backup, path.join(f.dir, n));
      if (info) out.push(info);
    }
  }
  return out;
}

/** The entries of `dir`, symlinks included (callers tell them apart); none when it does not exist. */
export async function folderEntries(dir: string): Promise<fs.Dirent[]> {
  try {
    return await fs.promises.readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}

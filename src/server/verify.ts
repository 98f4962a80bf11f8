import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { decompressor } from '../archive/decompress.js';
import { INDEX_SUFFIX } from '../archive/index-header.js';
import { readIndex, type IndexReader } from '../archive/index-format.js';
import { TarReader } from '../archive/tar-reader.js';
import { formatBytes } from '../config/units.js';
import { errnoCode, errorMessage } from '../errors.js';
import { EXIT_BACKUP_FAILED } from '../exit-codes.js';
import { backupFolders, readRecordedSha, SHA_SUFFIX } from './catalog.js';
import { OddEntries, OddEntryError, openRegular } from './storage-entries.js';
import type { Storage } from './storage.js';
import { selectStorages } from './storage-selection.js';

/** What re-reading one archive found. */
export interface VerifyResult {
  file: string;
  ok: boolean;
  /** Why not, or what could not be checked. */
  detail: string;
  members: number;
  size: number;
}

/**
 * Re-reads one archive: its SHA-256 against the one recorded at commit (and its index's), and
 * the whole stream decompressed and walked as tar up to its end-of-archive records.
 */
export async function verifyArchive(file: string): Promise<VerifyResult> {
  // Only a regular file is read: a symlink is not followed, a FIFO not waited on.
  const fh = await openRegular(file).catch((err: unknown) => {
    if (err instanceof OddEntryError) return err;
    throw err;
  });
  if (fh instanceof OddEntryError) return { file, ok: false, detail: fh.why, members: 0, size: 0 };
  const size = (await fh.stat()).size;
  const hash = crypto.createHash('sha256');
  const input = fh.createReadStream({ highWaterMark: 1 << 20 });
  input.on('data', (chunk) => hash.update(chunk as Buffer));
  const tar = input.pipe(decompressor(file.endsWith('.tar.zst') ? 'zstd' : 'gzip', path.basename(file)));
  input.on('error', (err) => tar.destroy(err));
  const reader = new TarReader(tar);
  const index = await IndexCheck.open(file + INDEX_SUFFIX);
  let members = 0;
  try {
    if (typeof index === 'string') return { file, ok: false, detail: `its index ${index}`, members, size };
    for (let m = await reader.next(); m !== null; m = await reader.next()) {
      members++;
      await index?.member(m.offset);
    }
    await reader.drain();
  } catch (err) {
    return { file, ok: false, detail: `not a valid compressed tar: ${errorMessage(err)}`, members, size };
  } finally {
    input.destroy();
    await fh.close().catch(() => undefined);
  }
  const sha = hash.digest();
  const recorded = await readRecordedSha(file);
  if ('bad' in recorded) return { file, ok: false, detail: `its ${SHA_SUFFIX} ${recorded.bad}`, members, size };
  if ('sha' in recorded && !recorded.sha.equals(sha)) {
    return { file, ok: false, detail: `SHA-256 ${sha.toString('hex')} differs from the one recorded at commit, ${recorded.sha.toString('hex')}`, members, size };
  }
  let note = 'sha' in recorded ? 'SHA-256 matches' : 'no SHA-256 recorded (committed before version 5)';
  if (index) {
    const problem = await index.end(size, sha.toString('hex'));
    if (problem) return { file, ok: false, detail: `its index ${problem}`, members, size };
    note += ', index matches';
  }
  return { file, ok: true, detail: note, members, size };
}

/** An archive's index, read alongside the archive: every member where the index says it starts. */
class IndexCheck {
  private reader: Promise<IndexReader>;
  private problem: string | null = null;
  private seen = 0;

  /** The check of `file`; null when there is no index, or why what has its name is not one. */
  static async open(file: string): Promise<IndexCheck | null | string> {
    try {
      return new IndexCheck(await openRegular(file));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      if (err instanceof OddEntryError) return err.why;
      throw err;
    }
  }

  private constructor(fh: fs.promises.FileHandle) {
    const input = fh.createReadStream();
    this.reader = readIndex(input);
    this.reader.catch(() => input.destroy());
  }

  async member(offset: number): Promise<void> {
    if (this.problem) return;
    try {
      const next = await (await this.reader).members.next();
      this.seen++;
      if (next.done) this.problem = `lists fewer members than the archive holds`;
      else if (next.value.offset !== offset) this.problem = `puts member ${this.seen} at tar offset ${next.value.offset}, the archive has it at ${offset}`;
    } catch (err) {
      this.problem = `cannot be read: ${errorMessage(err)}`;
    }
  }

  /** Why the index does not describe this archive, or null when it does. */
  async end(size: number, sha256: string): Promise<string | null> {
    try {
      const r = await this.reader;
      if (this.problem) return this.problem;
      if (r.header.sha256 !== sha256 || r.header.archiveSize !== size) return 'describes another archive';
      const rest = await r.members.next();
      if (!rest.done) return 'lists more members than the archive holds';
      return null;
    } catch (err) {
      return this.problem ?? `cannot be read: ${errorMessage(err)}`;
    }
  }
}

/**
 * Every archive of the storages (or one), of every agent (or one), oldest first per backup; what
 * is skipped (symlinked folders, things named like archives that are not) goes to `odd`.
 */
export async function archivesToVerify(storages: Storage[], agent?: string, odd?: OddEntries): Promise<string[]> {
  const out: string[] = [];
  for (const s of storages) {
    for (const f of await backupFolders(s, agent, undefined, odd)) out.push(...f.archives.map((n) => path.join(f.dir, n)));
  }
  return out;
}

/** `nbackup-server verify [--storage S] [--agent A]`: one line per archive; 1 if any is bad. */
export async function runVerify(configPath: string, o: { storage?: string; agent?: string }): Promise<number> {
  const storages = await selectStorages(configPath, o);
  const odd = new OddEntries();
  const files = await archivesToVerify(storages, o.agent, odd);
  for (const i of odd.items) process.stdout.write(`SKIP  ${i.path}  ${i.why}\n`);
  if (odd.count > odd.items.length) process.stdout.write(`SKIP  … and ${odd.count - odd.items.length} more\n`);
  let bad = 0;
  for (const file of files) {
    const r = await verifyArchive(file);
    if (!r.ok) bad++;
    process.stdout.write(`${r.ok ? 'OK ' : 'BAD'}  ${file}  ${formatBytes(r.size)}  ${r.members} members  ${r.detail}\n`);
  }
  process.stdout.write(`${files.length} archives verified, ${bad} bad${odd.count > 0 ? `, ${odd.count} skipped (not archives the server made)` : ''}\n`);
  return bad > 0 ? EXIT_BACKUP_FAILED : 0;
}

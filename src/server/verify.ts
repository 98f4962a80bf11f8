import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { decompressor } from '../archive/decompress.js';
import { INDEX_SUFFIX } from '../archive/index-header.js';
import { readIndex, type IndexReader } from '../archive/index-format.js';
import { TarReader } from '../archive/tar-reader.js';
import { formatBytes } from '../config/units.js';
import { errorMessage } from '../errors.js';
import { EXIT_BACKUP_FAILED } from '../exit-codes.js';
import { backupFolders, recordedSha } from './catalog.js';
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
  const size = (await fs.promises.stat(file)).size;
  const hash = crypto.createHash('sha256');
  const input = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  input.on('data', (chunk) => hash.update(chunk as Buffer));
  const tar = input.pipe(decompressor(file.endsWith('.tar.zst') ? 'zstd' : 'gzip', path.basename(file)));
  input.on('error', (err) => tar.destroy(err));
  const reader = new TarReader(tar);
  const index = fs.existsSync(file + INDEX_SUFFIX) ? new IndexCheck(file + INDEX_SUFFIX) : null;
  let members = 0;
  try {
    for (let m = await reader.next(); m !== null; m = await reader.next()) {
      members++;
      await index?.member(m.offset);
    }
    await reader.drain();
  } catch (err) {
    input.destroy();
    return { file, ok: false, detail: `not a valid compressed tar: ${errorMessage(err)}`, members, size };
  }
  const sha = hash.digest();
  const recorded = await recordedSha(file);
  if (recorded && !recorded.equals(sha)) {
    return { file, ok: false, detail: `SHA-256 ${sha.toString('hex')} differs from the one recorded at commit, ${recorded.toString('hex')}`, members, size };
  }
  let note = recorded ? 'SHA-256 matches' : 'no SHA-256 recorded (committed before version 5)';
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

  constructor(file: string) {
    const input = fs.createReadStream(file);
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

/** Every archive of the storages (or one), of every agent (or one), oldest first per backup. */
export async function archivesToVerify(storages: Storage[], agent?: string): Promise<string[]> {
  const out: string[] = [];
  for (const s of storages) {
    for (const f of await backupFolders(s, agent)) out.push(...f.archives.map((n) => path.join(f.dir, n)));
  }
  return out;
}

/** `nbackup-server verify [--storage S] [--agent A]`: one line per archive; 1 if any is bad. */
export async function runVerify(configPath: string, o: { storage?: string; agent?: string }): Promise<number> {
  const storages = await selectStorages(configPath, o);
  const files = await archivesToVerify(storages, o.agent);
  let bad = 0;
  for (const file of files) {
    const r = await verifyArchive(file);
    if (!r.ok) bad++;
    process.stdout.write(`${r.ok ? 'OK ' : 'BAD'}  ${file}  ${formatBytes(r.size)}  ${r.members} members  ${r.detail}\n`);
  }
  process.stdout.write(`${files.length} archives verified, ${bad} bad\n`);
  return bad > 0 ? EXIT_BACKUP_FAILED : 0;
}

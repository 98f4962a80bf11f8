import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { decompressor } from '../archive/decompress.js';
import { INDEX_SUFFIX, readIndexHeader } from '../archive/index-header.js';
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
  const tar = input.pipe(decompressor(file.endsWith('.tar.zst') ? 'zstd' : 'gzip'));
  input.on('error', (err) => tar.destroy(err));
  const reader = new TarReader(tar);
  let members = 0;
  try {
    while ((await reader.next()) !== null) members++;
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
  if (fs.existsSync(file + INDEX_SUFFIX)) {
    try {
      const h = await readIndexHeader(file + INDEX_SUFFIX);
      if (h.sha256 !== sha.toString('hex') || h.archiveSize !== size) return { file, ok: false, detail: 'its index describes another archive', members, size };
      if (h.members !== members) return { file, ok: false, detail: `its index lists ${h.members} members, the archive holds ${members}`, members, size };
      note += ', index matches';
    } catch (err) {
      return { file, ok: false, detail: `its index cannot be read: ${errorMessage(err)}`, members, size };
    }
  }
  return { file, ok: true, detail: note, members, size };
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

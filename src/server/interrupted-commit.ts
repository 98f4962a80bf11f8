import fs from 'node:fs';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { archivesIn, recordedSha, shaLine, SHA_SUFFIX, writeFileAtomic } from './catalog.js';
import type { ServerContext } from './context.js';
import { fsyncDir } from './file-io.js';
import type { sessionFiles, SessionRecord } from './session-record.js';
import type { Storage } from './storage.js';

/**
 * A session whose record says `committing` was verified, and its server stopped somewhere in the
 * commit (storage.ts): before the archive was linked into place, after the link (the temporary
 * file then has a second name, the archive), or after the temporary name was removed (the archive
 * then has its `.sha256` beside it, written before that removal).
 *
 * When the archive is found, the commit is finished here — `.sha256`, the session's files removed,
 * the folder fsynced, the retention applied — and remembered as committed, so that the agent's
 * resume hears COMMITTED instead of starting the backup over. Returns false when the archive was
 * never linked: the session is taken up as any other and the agent's resume commits it.
 */
export async function finishInterruptedCommit(
  ctx: ServerContext,
  storage: Storage,
  record: SessionRecord & { committing: { size: number; sha256: string } },
  files: ReturnType<typeof sessionFiles>,
): Promise<boolean> {
  const dir = path.dirname(files.temp);
  const { size, sha256 } = record.committing;
  const archive = await committedArchive(dir, files.temp, sha256);
  if (archive === null) return false;
  const st = await fs.promises.stat(archive);
  if (st.size !== size) throw new Error(`${archive} has ${st.size} bytes where the session verified ${size}`);
  if ((await recordedSha(archive))?.toString('hex') !== sha256) await writeFileAtomic(dir, path.basename(archive) + SHA_SUFFIX, shaLine(archive, sha256));
  for (const f of Object.values(files)) await fs.promises.rm(f, { force: true });
  await fsyncDir(dir);
  const { removed, odd } = await storage.rotate(dir, path.basename(archive));
  if (odd.count > 0) ctx.log.warn({ session: record.id, ...odd.fields() }, 'retention left alone what is not an archive the server made');
  ctx.registry.rememberCommitted(record.id, { agent: record.agent, storage: record.storage, size, sha256: Buffer.from(sha256, 'hex'), file: archive });
  ctx.log.info(
    { session: record.id, agent: record.agent, storage: record.storage, backup: record.backup, file: archive, bytes: size, rotated: removed },
    'a commit the previous server had begun is finished; a resume of the session hears COMMITTED',
  );
  return true;
}

/** The archive the interrupted commit linked, or null when it did not get that far. */
async function committedArchive(dir: string, temp: string, sha256: string): Promise<string | null> {
  const archives = (await archivesIn(dir)).map((n) => path.join(dir, n));
  let tempStat: fs.Stats | null = null;
  try {
    tempStat = await fs.promises.lstat(temp);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (tempStat) {
    // Still there: linked when it has a second name, which is the archive (same inode).
    if (tempStat.nlink < 2) return null;
    for (const a of archives) {
      const st = await fs.promises.lstat(a);
      if (st.ino === tempStat.ino && st.dev === tempStat.dev) return a;
    }
    return null;
  }
  // Gone: it was removed after the `.sha256` of its archive was written.
  for (const a of archives) if ((await recordedSha(a))?.toString('hex') === sha256) return a;
  return null;
}

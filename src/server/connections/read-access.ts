import { ReadStatus, isSupportedVersion } from '../../../protocol/constants.js';
import { nameProblem } from '../../../protocol/names.js';
import { isArchiveName } from '../../archive/names.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import type { Storage } from '../storage.js';
import { OddEntryError, realFolder } from '../storage-entries.js';

/** Why a read-side request is refused, as its answer says it; null when it may go on. */
export type Refusal = { status: ReadStatus; message: string };

/**
 * The rules of every version-5 read: a supported version, and an agent line that is the peer's own
 * certificate CN — an agent lists and reads only its own backups. Names follow the backup rules.
 */
export function checkReader(ctx: ServerContext, conn: Connection, req: { version: number; agent: string }): Refusal | null {
  if (!isSupportedVersion(req.version)) return { status: ReadStatus.REJECT, message: `protocol version ${req.version} is not supported` };
  const cn = peerName(conn.socket);
  const problem = nameProblem(req.agent);
  if (problem) return { status: ReadStatus.REJECT, message: `agent name ${JSON.stringify(req.agent)} ${problem}` };
  if (req.agent !== cn) {
    ctx.log.warn({ remote: conn.remote, cn, asked: req.agent }, "read refused: an agent may read only its own backups");
    return { status: ReadStatus.REJECT, message: `certificate CN "${cn ?? ''}" may not read the backups of agent "${req.agent}"` };
  }
  return null;
}

/**
 * The storage and archive path a READ names, or why not. The agent's and the backup's folders must
 * be real folders: through a symlink planted in the storage nothing is read (the server logs it).
 */
export async function locateArchive(
  ctx: ServerContext,
  req: { agent: string; storage: string; backup: string; name: string },
): Promise<{ storage: Storage; dir: string; file: string } | Refusal> {
  const storage = ctx.storages.get(req.storage);
  if (!storage) return { status: ReadStatus.NOT_FOUND, message: `no storage named "${req.storage}"` };
  const problem = nameProblem(req.backup);
  if (problem) return { status: ReadStatus.REJECT, message: `backup name ${JSON.stringify(req.backup)} ${problem}` };
  if (!isArchiveName(req.name)) return { status: ReadStatus.REJECT, message: `"${req.name}" is not an archive name (<timestamp>.tar.gz or .tar.zst)` };
  const dir = storage.backupDir(req.agent, req.backup);
  try {
    await realFolder(storage.baseDir, [req.agent, req.backup]);
  } catch (err) {
    if (err instanceof OddEntryError) ctx.log.warn({ storage: storage.name, path: err.path, reason: err.why }, 'read refused: the storage holds what the server did not make');
    return { status: ReadStatus.NOT_FOUND, message: `${req.storage}/${req.backup}/${req.name} does not exist${err instanceof OddEntryError ? ' (its folder is not one the server made)' : ''}` };
  }
  return { storage, dir, file: `${dir}/${req.name}` };
}

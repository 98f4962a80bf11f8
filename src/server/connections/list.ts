import { ReadStatus } from '../../../protocol/constants.js';
import { encodeArchiveInfo, encodeListHead, type ArchiveInfo, type ListRequest } from '../../../protocol/frames.js';
import { nameProblem } from '../../../protocol/names.js';
import { writeWithBackpressure } from '../../net/frame-socket.js';
import { listArchives } from '../catalog.js';
import type { Connection, ServerContext } from '../context.js';
import { checkReader } from './read-access.js';
import { OddEntries } from '../storage-entries.js';

/** `LIST` (version 5): the peer's own archives in every storage, per backup, oldest first. */
export async function serveList(ctx: ServerContext, conn: Connection, req: ListRequest): Promise<void> {
  const { socket } = conn;
  const refused = checkReader(ctx, conn, req) ?? (req.backup !== '' && nameProblem(req.backup) ? { status: ReadStatus.REJECT, message: `backup name ${JSON.stringify(req.backup)} ${nameProblem(req.backup)}` } : null);
  if (refused) {
    socket.end(encodeListHead({ ...refused, count: 0 }));
    return;
  }
  const all: ArchiveInfo[] = [];
  for (const storage of ctx.storages.values()) {
    const odd = new OddEntries();
    all.push(...(await listArchives(storage, req.agent, req.backup, odd)));
    if (odd.count > 0) ctx.log.warn({ storage: storage.name, agent: req.agent, ...odd.fields() }, 'list skipped what is not an archive the server made (symlinks, folders, FIFOs under its names)');
  }
  await writeWithBackpressure(socket, encodeListHead({ status: ReadStatus.OK, message: '', count: all.length }));
  for (const a of all) await writeWithBackpressure(socket, encodeArchiveInfo(a));
  socket.end();
  ctx.log.info({ remote: conn.remote, agent: req.agent, backup: req.backup || '*', archives: all.length }, 'listed archives');
}

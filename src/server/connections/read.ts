import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { ReadStatus, ReadTarget } from '../../../protocol/constants.js';
import { encodeReadHead, type ReadRequest } from '../../../protocol/frames.js';
import { INDEX_SUFFIX } from '../../archive/index-header.js';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';
import type { Connection, ServerContext } from '../context.js';
import { checkReader, locateArchive } from './read-access.js';
import { OddEntryError, openRegular } from '../storage-entries.js';

/**
 * `READ` (version 5): a byte range of one of the peer's own archives (or of its index). The file is
 * opened only as a regular file (no symlink followed, no FIFO waited on) and read from that descriptor, so a rotation meanwhile does not
 * cut the answer short; the range is streamed with the socket's backpressure.
 */
export async function serveRead(ctx: ServerContext, conn: Connection, req: ReadRequest): Promise<void> {
  const { socket } = conn;
  const refuse = (r: { status: ReadStatus; message: string }): void => void socket.end(encodeReadHead({ ...r, length: 0 }));
  const refused = checkReader(ctx, conn, req);
  if (refused) return refuse(refused);
  const at = await locateArchive(ctx, req);
  if ('status' in at) return refuse(at);
  const file = req.target === ReadTarget.INDEX ? at.file + INDEX_SUFFIX : at.file;
  let fh: fs.promises.FileHandle;
  try {
    fh = await openRegular(file);
  } catch (err) {
    const what = `${req.storage}/${req.backup}/${req.name}${req.target === ReadTarget.INDEX ? INDEX_SUFFIX : ''}`;
    if (err instanceof OddEntryError) {
      ctx.log.warn({ storage: at.storage.name, path: err.path, reason: err.why }, 'read refused: the storage holds what the server did not make');
      return refuse({ status: ReadStatus.NOT_FOUND, message: `${what} is not a regular file` });
    }
    const gone = errnoCode(err) === 'ENOENT';
    return refuse({ status: ReadStatus.NOT_FOUND, message: gone ? `${req.storage}/${req.backup}/${req.name}${req.target === ReadTarget.INDEX ? ' has no index' : ' does not exist'}` : errorMessage(err) });
  }
  try {
    const st = await fh.stat();
    if (req.offset > st.size) return refuse({ status: ReadStatus.REJECT, message: `offset ${req.offset} is past the end (${st.size} bytes)` });
    const length = req.length === 0 ? st.size - req.offset : Math.min(req.length, st.size - req.offset);
    socket.write(encodeReadHead({ status: ReadStatus.OK, message: '', length }));
    if (length > 0) {
      const body = fh.createReadStream({ start: req.offset, end: req.offset + length - 1, autoClose: false, highWaterMark: 1 << 20 });
      // A reader that stops taking bytes does not hold the file and this handler forever.
      const idleMs = ctx.config.server.idle_timeout;
      socket.setTimeout(idleMs, () => socket.destroy(new NbackupError('timeout', `the reader took nothing for ${idleMs / 1000} s`)));
      try {
        await pipeline(body, socket);
      } finally {
        socket.setTimeout(0);
      }
    } else {
      socket.end();
    }
    ctx.log.info({ remote: conn.remote, agent: req.agent, storage: req.storage, backup: req.backup, name: req.name, target: req.target === ReadTarget.INDEX ? 'index' : 'archive', offset: req.offset, bytes: length }, 'read served');
  } finally {
    await fh.close();
  }
}

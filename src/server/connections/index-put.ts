import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ReadStatus, isSupportedVersion } from '../../../protocol/constants.js';
import { encodeIndexAck, type IndexPut } from '../../../protocol/frames.js';
import { INDEX_SUFFIX, readIndexHeader } from '../../archive/index-header.js';
import { errorMessage } from '../../errors.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import { SocketPump } from '../socket-pump.js';
import { NoSpaceError } from '../space-guard.js';
import { SAFE_OPEN } from '../storage-entries.js';

/** Largest index accepted (an index of tens of millions of files stays well below it). */
export const MAX_INDEX_BYTES = 1024 * 1024 * 1024;

/**
 * `IDXP` (version 5): the agent sends the index of an archive it has just committed (identified by
 * the session ID, which only the agent that owns it may use). It is written beside the archive
 * atomically (temporary file, fsync, rename, directory fsync) and only when its header describes
 * that very archive (size and SHA-256), so an index never points into the wrong file.
 */
export async function serveIndexPut(ctx: ServerContext, conn: Connection, req: IndexPut): Promise<void> {
  const { socket, remote } = conn;
  const answer = (status: ReadStatus, message: string): void => {
    socket.end(encodeIndexAck({ status, message }));
    if (status !== ReadStatus.OK) ctx.log.warn({ remote, session: req.sessionId, reason: message }, 'index refused');
  };
  if (!isSupportedVersion(req.version)) return answer(ReadStatus.REJECT, `protocol version ${req.version} is not supported`);
  const committed = ctx.registry.committedSession(req.sessionId);
  if (!committed || committed.agent !== peerName(socket)) return answer(ReadStatus.NOT_FOUND, `no committed session ${req.sessionId} of this agent`);
  if (req.length === 0) return answer(ReadStatus.REJECT, 'an empty index');
  if (req.length > MAX_INDEX_BYTES) return answer(ReadStatus.REJECT, `an index of ${req.length} bytes is larger than ${MAX_INDEX_BYTES}`);
  const dir = path.dirname(committed.file);
  const final = committed.file + INDEX_SUFFIX;
  // One temporary file per upload: two uploads of one index never write into each other's file.
  const tmp = path.join(dir, `.${path.basename(final)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  // An index draws on the free space above min_free like an archive does, all of it up front.
  const storage = ctx.storages.get(committed.storage);
  if (!storage) return answer(ReadStatus.NOT_FOUND, `storage "${committed.storage}" is no longer configured`);
  const space = storage.space;
  // The folder may have been swapped for a symlink since the commit: write nothing through it.
  const folderProblem = await storage.checkFolder(dir).then(() => null, (err: unknown) => errorMessage(err));
  if (folderProblem) return answer(ReadStatus.NOT_FOUND, `the archive's folder cannot be used: ${folderProblem}`);
  try {
    await space.claim(req.length);
  } catch (err) {
    if (err instanceof NoSpaceError) return answer(ReadStatus.REJECT, `index not stored: ${err.message}`);
    throw err;
  }
  const fh = await fs.promises.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | SAFE_OPEN, 0o640).catch((err: unknown) => {
    space.written(req.length);
    throw err;
  });
  let keep = false;
  try {
    const got = await receive(ctx, conn, fh, req.length);
    if (got !== req.length) return answer(ReadStatus.REJECT, `index cut short: ${got} of ${req.length} bytes`);
    await fh.sync();
    const header = await readIndexHeader(tmp).catch((err: unknown) => {
      throw new Error(`not a readable index: ${errorMessage(err)}`);
    });
    if (header.archiveSize !== committed.size || header.sha256 !== committed.sha256.toString('hex')) {
      return answer(ReadStatus.REJECT, 'the index describes another archive (size or SHA-256 differ)');
    }
    await fs.promises.rename(tmp, final);
    keep = true;
    const dh = await fs.promises.open(dir, 'r');
    await dh.sync().finally(() => dh.close());
    answer(ReadStatus.OK, '');
    ctx.log.info({ remote, session: req.sessionId, file: final, bytes: req.length, members: header.members }, 'index stored');
  } catch (err) {
    answer(ReadStatus.REJECT, errorMessage(err));
  } finally {
    space.written(req.length);
    await fh.close();
    if (!keep) await fs.promises.rm(tmp, { force: true });
  }
}

/** Writes what the connection brings, at most `length` bytes, to `fh`; resolves with how many came. */
async function receive(ctx: ServerContext, conn: Connection, fh: fs.promises.FileHandle, length: number): Promise<number> {
  let got = 0;
  let writing: Promise<unknown> = Promise.resolve();
  let pending = 0;
  let failure: Error | null = null;
  const pump = new SocketPump(conn.socket, {
    push(chunk) {
      if (failure) throw failure;
      if (got + chunk.length > length) throw new Error(`more than the announced ${length} bytes`);
      got += chunk.length;
      pending += chunk.length;
      writing = writing.then(() => fh.write(chunk)).then(
        () => (pending -= chunk.length),
        (err: Error) => (failure = err),
      );
      if (got === length) pump.stop('index received');
    },
    get congested() {
      return pending > 4 << 20;
    },
    drained: () => writing.then(() => undefined),
  }, { idleMs: ctx.config.server.idle_timeout });
  await pump.run(conn.frames.detach());
  await writing;
  if (failure) throw failure;
  return got;
}

import fs from 'node:fs';
import path from 'node:path';
import { AbortReason, FinalStatus, speaksReasons } from '../../protocol/constants.js';
import { encodeFinalAck } from '../../protocol/frames.js';
import { errorMessage } from '../errors.js';
import type { Connection, ServerContext } from './context.js';
import { sessionFiles, writeRecord } from './session-record.js';
import { NoSpaceError } from './space-guard.js';
import { bytesReceived, recordOf, sessionContext, type Session } from './session.js';
import type { Verdict } from './verdict.js';

/**
 * How every session ends, single-stream or parallel: a write error or a failed verdict discards the
 * temporary file and answers NO_SPACE, WRITE_ERROR or CHECKSUM_MISMATCH with the reason (version
 * 3; a version-2 agent gets the status byte alone, NO_SPACE as WRITE_ERROR); a good verdict
 * commits the file (fsync, rename, rotate) and only then answers OK.
 */
export type SessionResult = Verdict | { failed: Error };

/** How long a failing Final ACK may wait for a peer that never reads it. */
const ANSWER_DRAIN_MS = 10_000;

export async function concludeSession(ctx: ServerContext, session: Session, conn: Connection, result: SessionResult): Promise<void> {
  const { log, registry } = ctx;
  const socket = conn.socket;
  if ('failed' in result) {
    const noSpace = result.failed instanceof NoSpaceError;
    // Its control channel hears it first (CABT), whatever state its data connections are in.
    if (noSpace && ctx.control.send(session.agent, { type: 'abort', reason: AbortReason.DISK_FULL })) {
      log.info({ ...sessionContext(session) }, 'agent told to abort on its control channel (CABT disk full)');
    }
    answerFailure(session, conn, noSpace ? FinalStatus.NO_SPACE : FinalStatus.WRITE_ERROR, result.failed.message);
    if (noSpace) log.error({ ...sessionContext(session), reason: result.failed.message, bytes: bytesReceived(session) }, 'session stopped: out of space');
    await registry.discard(session, noSpace ? result.failed.message : `write error: ${result.failed.message}`, noSpace ? 'no_space' : 'write_error');
    return;
  }
  if (!result.ok) {
    answerFailure(session, conn, FinalStatus.CHECKSUM_MISMATCH, result.reason);
    log.error({ ...sessionContext(session), reason: result.reason, bytes: bytesReceived(session) }, 'session failed: checksum mismatch');
    await registry.discard(session, 'checksum mismatch', 'checksum_mismatch');
    return;
  }
  session.committing = true;
  try {
    const tempPath = session.temp.path;
    const files = sessionFiles(tempPath);
    // Its folder swapped for a symlink since the session began: write nothing through it.
    await session.storage.checkFolder(path.dirname(tempPath));
    // A server that dies from here on may have committed: its successor must not take the session
    // up again (the agent would send the whole backup once more), but answer COMMITTED.
    await writeRecord(files.record, { ...recordOf(session), committing: { size: result.dataSize, sha256: result.sha256 } });
    const { file, removed, clockBehindMs, odd, failed } = await session.storage.commit(session.temp, result.dataSize, result.sha256);
    if (clockBehindMs > 0) {
      log.warn(
        { ...sessionContext(session), behindS: Math.round(clockBehindMs / 1000), file },
        'the server clock is behind the newest archive; the new archive is named just after it, so names keep their commit order',
      );
    }
    if (failed) log.error({ ...sessionContext(session), file, reason: failed }, 'the archive is committed, but the retention after it failed');
    if (odd.count > 0) log.warn({ ...sessionContext(session), ...odd.fields() }, 'retention left alone what is not an archive the server made');
    session.closed = true;
    registry.committed(session, result.dataSize, Buffer.from(result.sha256, 'hex'), file);
    if (session.mode === 'parallel') {
      session.chunks.closeAll();
      await session.chunks.assembler.dispose();
    }
    // Nothing of the session is left beside the archive (staging, journal, record).
    for (const f of [files.staging, files.journal, files.record]) await fs.promises.rm(f, { force: true });
    socket.end(encodeFinalAck({ status: FinalStatus.OK, message: '' }, conn.version));
    const seconds = (Date.now() - session.startedAt) / 1000;
    ctx.metrics.committed({ agent: session.agent, storage: session.storage.name, backup: session.backup }, result.dataSize, seconds);
    log.info(
      {
        ...sessionContext(session),
        file,
        bytes: result.dataSize,
        sha256: result.sha256,
        resumes: session.resumes,
        durationS: Number(seconds.toFixed(3)),
        mbPerS: Number((result.dataSize / 1048576 / Math.max(seconds, 0.001)).toFixed(1)),
        rotated: removed,
      },
      'session committed',
    );
    ctx.gate.leave(session.key);
  } catch (err) {
    answerFailure(session, conn, FinalStatus.WRITE_ERROR, `commit failed: ${errorMessage(err)}`);
    await registry.discard(session, `commit failed: ${errorMessage(err)}`, 'write_error');
  }
}

/**
 * Sends a failing Final ACK and lets it drain: the connection is taken out of the session's slot
 * first, so the discard that follows does not destroy it with the answer still queued. Whatever
 * the agent still sends is read and dropped, so that it is not blocked from reading the answer.
 */
function answerFailure(session: Session, conn: Connection, status: FinalStatus, message: string): void {
  const { socket } = conn;
  session.link.vacate(socket);
  const v2 = !speaksReasons(conn.version);
  socket.end(encodeFinalAck({ status: v2 && status === FinalStatus.NO_SPACE ? FinalStatus.WRITE_ERROR : status, message }, conn.version));
  socket.resume();
  setTimeout(() => socket.destroy(), ANSWER_DRAIN_MS).unref();
}

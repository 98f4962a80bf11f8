import crypto from 'node:crypto';
import path from 'node:path';
import { AckStatus, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, speaksAdmission, speaksReasons } from '../../../protocol/constants.js';
import { decodeMode, encodeAck, type Handshake, type Mode } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import { abandonAdmission, admit } from '../admission.js';
import { BodyReceiver } from '../body-receiver.js';
import { ChunkAssembler } from '../chunk-assembler.js';
import { ChunkStreams } from '../chunk-stream-receiver.js';
import type { Connection, ServerContext } from '../context.js';
import { parallelSession, recordOf, sessionContext, singleSession, type Session, type SessionIdentity } from '../session.js';
import { ChunkJournal } from '../chunk-journal.js';
import { sessionFiles, writeRecord } from '../session-record.js';
import type { TempFile } from '../storage.js';
import { feedPrimary } from './feed-primary.js';
import { feedSingle } from './feed-single.js';

/**
 * `NBKP`: a new backup session. Admission, a temporary file, ACK GO with the session ID, then the
 * mode byte decides whether this connection carries the body (single stream) or only the trailer
 * (the primary of a parallel session).
 */
export async function serveBackup(ctx: ServerContext, conn: Connection, hs: Handshake): Promise<void> {
  const { socket, frames, remote } = conn;
  const refuse = (status: AckStatus, message: string): void => {
    ctx.log.warn({ remote, agent: hs.agent, storage: hs.storage, backup: hs.backup, status, reason: message }, 'session refused');
    // Older agents get the status they knew: FULL for STORAGE_UNAVAILABLE (v2), BUSY for WAIT (v2, v3).
    let answer: AckStatus = status;
    if (status === AckStatus.STORAGE_UNAVAILABLE && !speaksReasons(conn.version)) answer = AckStatus.FULL;
    if (status === AckStatus.WAIT && !speaksAdmission(conn.version)) answer = AckStatus.BUSY;
    socket.end(encodeAck({ status: answer, message, sessionId: '' }));
  };
  const admission = await admit(ctx, socket, hs);
  if (!admission.ok) return refuse(admission.status, admission.message);
  const { storage, claim, format } = admission;
  const id = crypto.randomUUID();
  let temp: TempFile;
  try {
    temp = await storage.createTemp(hs.agent, hs.backup, id, format);
  } catch (err) {
    abandonAdmission(ctx, claim);
    refuse(AckStatus.STORAGE_UNAVAILABLE, `storage "${storage.name}" cannot be used: cannot create a temporary file: ${errorMessage(err)}`);
    return;
  }
  const who: SessionIdentity = { id, agent: hs.agent, storage, backup: hs.backup, temp, version: conn.version, format };
  const ctxFields = { session: id, agent: hs.agent, storage: storage.name, backup: hs.backup };
  ctx.registry.announce(id);
  socket.write(encodeAck({ status: AckStatus.GO, message: '', sessionId: id }));
  ctx.log.info({ ...ctxFields, remote, format }, 'session started');
  const files = sessionFiles(temp.path);
  let session: Session | undefined;
  try {
    const mode = await frames.read(decodeMode, ctx.config.server.handshake_timeout, 'stream mode');
    session = await newSession(who, mode, files.journal);
    // Beside the temporary file, what a restarted server needs to take the session up again (never
    // through a folder swapped for a symlink since the file was made).
    await storage.checkFolder(path.dirname(temp.path));
    await writeRecord(files.record, recordOf(session));
  } catch (err) {
    abandonAdmission(ctx, claim);
    if (session?.mode === 'parallel') await session.chunks.assembler.dispose();
    await storage.removeTemp(temp);
    ctx.log.warn({ ...ctxFields, reason: `no usable stream mode: ${errorMessage(err)}` }, 'session discarded');
    ctx.registry.started(id);
    throw err;
  }
  ctx.registry.add(session, claim);
  if (session.mode === 'single') return feedSingle(ctx, session, conn);
  ctx.log.info({ ...sessionContext(session), maxStreams: session.chunks.maxStreams, chunkSize: session.chunks.chunkSize }, 'parallel session');
  return feedPrimary(ctx, session, conn);
}

async function newSession(who: SessionIdentity, mode: Mode, journalPath: string): Promise<Session> {
  const { storage, temp } = who;
  if (mode.kind === 'single') return singleSession(who, new BodyReceiver(temp.fd, {}, storage.space));
  checkParallelInit(mode.maxStreams, mode.chunkSize);
  const journal = await ChunkJournal.create(journalPath);
  const assembler = new ChunkAssembler(temp.fd, sessionFiles(temp.path).staging, storage.config.assembler_pending_mem_limit, storage.space, journal);
  return parallelSession(who, new ChunkStreams(mode.maxStreams, mode.chunkSize, assembler));
}

function checkParallelInit(maxStreams: number, chunkSize: number): void {
  if (maxStreams < 1 || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new NbackupError(
      'protocol',
      `bad ParallelInit (${maxStreams} streams of ${chunkSize}-byte chunks): it needs 1..255 streams and chunks of ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} bytes`,
    );
  }
}

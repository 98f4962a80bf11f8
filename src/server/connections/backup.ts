import crypto from 'node:crypto';
import { AckStatus, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, speaksReasons } from '../../../protocol/constants.js';
import { decodeMode, encodeAck, type Handshake, type Mode } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import { admit } from '../admission.js';
import { BodyReceiver } from '../body-receiver.js';
import { ChunkAssembler } from '../chunk-assembler.js';
import { ChunkStreams } from '../chunk-stream-receiver.js';
import type { Connection, ServerContext } from '../context.js';
import { parallelSession, sessionContext, singleSession, type SessionIdentity } from '../session.js';
import { stagingPathOf, type TempFile } from '../storage.js';
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
    // A version-2 agent does not know STORAGE_UNAVAILABLE: FULL is what it understood before.
    const answer = status === AckStatus.STORAGE_UNAVAILABLE && !speaksReasons(conn.version) ? AckStatus.FULL : status;
    socket.end(encodeAck({ status: answer, message, sessionId: '' }));
  };
  const admission = await admit(ctx, socket, hs);
  if (!admission.ok) return refuse(admission.status, admission.message);
  const { storage, claim } = admission;
  const id = crypto.randomUUID();
  let temp: TempFile;
  try {
    temp = await storage.createTemp(hs.agent, hs.backup, id);
  } catch (err) {
    claim.release();
    refuse(AckStatus.STORAGE_UNAVAILABLE, `storage "${storage.name}" cannot be used: cannot create a temporary file: ${errorMessage(err)}`);
    return;
  }
  const who: SessionIdentity = { id, agent: hs.agent, storage, backup: hs.backup, temp };
  const ctxFields = { session: id, agent: hs.agent, storage: storage.name, backup: hs.backup };
  socket.write(encodeAck({ status: AckStatus.GO, message: '', sessionId: id }));
  ctx.log.info({ ...ctxFields, remote }, 'session started');
  let mode: Mode;
  try {
    mode = await frames.read(decodeMode, ctx.config.server.handshake_timeout, 'stream mode');
    if (mode.kind === 'parallel') checkParallelInit(mode.maxStreams, mode.chunkSize);
  } catch (err) {
    claim.release();
    await storage.removeTemp(temp);
    ctx.log.warn({ ...ctxFields, reason: `no usable stream mode: ${errorMessage(err)}` }, 'session discarded');
    throw err;
  }
  if (mode.kind === 'single') {
    const session = singleSession(who, new BodyReceiver(temp.fd, {}, storage.space));
    ctx.registry.add(session, claim);
    return feedSingle(ctx, session, conn);
  }
  const assembler = new ChunkAssembler(temp.fd, stagingPathOf(temp), storage.config.assembler_pending_mem_limit, storage.space);
  const session = parallelSession(who, new ChunkStreams(mode.maxStreams, mode.chunkSize, assembler));
  ctx.registry.add(session, claim);
  ctx.log.info({ ...sessionContext(session), maxStreams: mode.maxStreams, chunkSize: mode.chunkSize }, 'parallel session');
  return feedPrimary(ctx, session, conn);
}

function checkParallelInit(maxStreams: number, chunkSize: number): void {
  if (maxStreams < 1 || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new NbackupError(
      'protocol',
      `bad ParallelInit (${maxStreams} streams of ${chunkSize}-byte chunks): it needs 1..255 streams and chunks of ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} bytes`,
    );
  }
}

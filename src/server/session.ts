import type { BodyReceiver } from './body-receiver.js';
import type { ChunkStreams } from './chunk-stream-receiver.js';
import { ConnectionSlot } from './connection-slot.js';
import type { ArchiveFormat } from '../config/index.js';
import type { SessionRecord } from './session-record.js';
import type { Storage, TempFile } from './storage.js';

/**
 * A backup session outlives its connections: when one breaks, the temporary file, the inline hash
 * state and the held-back bytes wait (detached) for a resume until `session_ttl` runs out.
 *
 * A session is either single-stream (one connection carries the body into a BodyReceiver) or
 * parallel (data streams feed a ChunkAssembler; the primary connection carries only the trailer
 * and the Final ACK). `link` holds the connection that feeds it now: the data connection or the
 * primary.
 */
interface SessionBase {
  readonly id: string;
  /** `agent:storage:backup`: at most one session per key (BUSY). */
  readonly key: string;
  readonly agent: string;
  readonly storage: Storage;
  readonly backup: string;
  readonly startedAt: number;
  readonly temp: TempFile;
  /** The protocol version of the agent that opened it. */
  readonly version: number;
  readonly format: ArchiveFormat;
  readonly link: ConnectionSlot;
  resumes: number;
  /** Committed or discarded: nothing may touch the temporary file any more. */
  closed: boolean;
  /** The commit (fsync, rename) is under way: too late for the agent to give the session up. */
  committing: boolean;
}

export interface SingleSession extends SessionBase {
  readonly mode: 'single';
  readonly receiver: BodyReceiver;
}

export interface ParallelSession extends SessionBase {
  readonly mode: 'parallel';
  readonly chunks: ChunkStreams;
}

export type Session = SingleSession | ParallelSession;

/** The session record of a live session (see session-record.ts). */
export function recordOf(s: Session): SessionRecord {
  const base = { format: 1 as const, id: s.id, agent: s.agent, storage: s.storage.name, backup: s.backup, version: s.version, archive: s.format };
  if (s.mode === 'single') return { ...base, mode: 'single' };
  return { ...base, mode: 'parallel', maxStreams: s.chunks.maxStreams, chunkSize: s.chunks.chunkSize };
}

/** What identifies a session in every log line about it. */
export function sessionContext(s: Session): Record<string, unknown> {
  return { session: s.id, agent: s.agent, storage: s.storage.name, backup: s.backup };
}

/** Data bytes the session has taken in so far. */
export function bytesReceived(s: Session): number {
  return s.mode === 'parallel' ? s.chunks.assembler.written : s.receiver.received;
}

export interface SessionIdentity {
  id: string;
  agent: string;
  storage: Storage;
  backup: string;
  temp: TempFile;
  version: number;
  format: ArchiveFormat;
}

/** `agent:storage:backup`, the key of the BUSY rule. */
export function sessionKey(agent: string, storage: string, backup: string): string {
  return `${agent}:${storage}:${backup}`;
}

export function singleSession(who: SessionIdentity, receiver: BodyReceiver): SingleSession {
  return { ...base(who), mode: 'single', receiver };
}

export function parallelSession(who: SessionIdentity, chunks: ChunkStreams): ParallelSession {
  return { ...base(who), mode: 'parallel', chunks };
}

function base(who: SessionIdentity): SessionBase {
  return {
    ...who,
    key: sessionKey(who.agent, who.storage.name, who.backup),
    startedAt: Date.now(),
    link: new ConnectionSlot(),
    resumes: 0,
    closed: false,
    committing: false,
  };
}

import type { Logger } from '../log/logger.js';
import type { SessionResult } from './metrics/server-metrics.js';
import { bytesReceived, sessionContext, type Session } from './session.js';

/**
 * The live sessions, by `agent:storage:backup` (the BUSY rule) and by session ID (resume, join),
 * and their lifecycle: claimed at the handshake, added once the mode is known, detached with a TTL
 * when their connection breaks, then forgotten (committed) or discarded (temporary file deleted).
 */
/** A committed session, remembered for `session_ttl` so that a resume after a lost Final ACK hears so. */
export interface CommittedSession {
  readonly agent: string;
  readonly storage: string;
  readonly size: number;
  readonly sha256: Buffer;
  /** The committed archive (where its index goes, IDXP). */
  readonly file: string;
}

export interface Claim {
  readonly key: string;
  /** Gives the key up without adding a session (the handshake did not complete). */
  release(): void;
}

export class SessionRegistry {
  private readonly byKey = new Map<string, Session>();
  private readonly byIdMap = new Map<string, Session>();
  /** Keys whose handshake is under way: BUSY for anyone else. */
  private readonly claims = new Set<string>();
  private readonly ttlTimers = new Map<Session, NodeJS.Timeout>();
  private readonly committedById = new Map<string, CommittedSession>();
  /**
   * Sessions whose GO has gone out but which are not registered yet (the mode frame, journal and
   * record come first): a stream that joins at once waits for them instead of hearing NOT_FOUND.
   */
  private readonly starting = new Map<string, { ready: Promise<void>; done: () => void }>();

  /** Told when a session stops holding an admission slot (discarded, or its connection lost). */
  onRelease: (key: string) => void = () => undefined;
  /** Told how each session that ends without a commit ended (metrics). */
  onDiscard: (result: SessionResult) => void = () => undefined;

  constructor(
    private readonly log: Logger,
    private readonly ttlMs: number,
  ) {}

  /**
   * Claims a key for a new session, or returns null when a backup of it is running (BUSY). A
   * detached session of the same key (or one whose connection is gone but not yet wound up) is
   * superseded: the agent chose to start over.
   */
  async claim(key: string): Promise<Claim | null> {
    const existing = this.byKey.get(key);
    if (this.claims.has(key) || existing?.link.busy) return null;
    this.claims.add(key);
    if (existing) {
      await existing.link.evict();
      await this.discard(existing, 'superseded by a new session of the same backup', 'superseded');
    }
    return { key, release: () => this.claims.delete(key) };
  }

  /** Registers a session under the key its claim held. */
  add(session: Session, claim: Claim): void {
    claim.release();
    this.byKey.set(session.key, session);
    this.byIdMap.set(session.id, session);
    this.started(session.id);
  }

  /** The session `id` was announced to its agent (GO) and is being set up. */
  announce(id: string): void {
    let done = (): void => undefined;
    const ready = new Promise<void>((resolve) => (done = resolve));
    this.starting.set(id, { ready, done });
  }

  /** Set-up of `id` is over, registered or not: whoever waits for it looks again. */
  started(id: string): void {
    this.starting.get(id)?.done();
    this.starting.delete(id);
  }

  /** The session `id`, waiting (at most `timeoutMs`) for one that was announced but not yet set up. */
  async byIdWhenReady(id: string, timeoutMs: number): Promise<Session | undefined> {
    const pending = this.starting.get(id);
    if (pending) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pending.ready, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    return this.byIdMap.get(id);
  }

  /** The live sessions (not committed, not discarded). */
  live(): Session[] {
    return [...this.byIdMap.values()].filter((s) => !s.closed);
  }

  byId(id: string): Session | undefined {
    return this.byIdMap.get(id);
  }

  /** Some backup is being received right now (a session waiting for a resume does not count). */
  get receiving(): boolean {
    if (this.claims.size > 0) return true;
    for (const s of this.byKey.values()) if (s.link.socket !== null) return true;
    return false;
  }

  /** The connection broke mid-session: keep the session for `session_ttl`, then discard it. */
  detach(session: Session, remote: string, why: string): void {
    if (session.closed) return;
    this.log.warn(
      { ...sessionContext(session), remote, reason: why, received: bytesReceived(session), ttlS: this.ttlMs / 1000 },
      'connection lost; session kept for resume',
    );
    this.keepFor(session, this.ttlMs);
    this.onRelease(session.key);
  }

  private keepFor(session: Session, ms: number): void {
    this.clearTtl(session);
    const timer = setTimeout(() => {
      void this.discard(session, `not resumed within ${Math.round(this.ttlMs / 1000)}s; temporary file deleted`, 'expired');
    }, ms);
    timer.unref();
    this.ttlTimers.set(session, timer);
  }

  /** A resume took the session back: its TTL no longer runs. */
  resumed(session: Session): void {
    this.clearTtl(session);
  }

  /** A session was committed: forget it as live, remember it as committed for the TTL. */
  committed(session: Session, size: number, sha256: Buffer, file: string): void {
    this.forget(session);
    this.rememberCommitted(session.id, { agent: session.agent, storage: session.storage.name, size, sha256, file });
  }

  /** A committed session, for the TTL: also one the previous server committed as it stopped. */
  rememberCommitted(id: string, committed: CommittedSession): void {
    this.committedById.set(id, committed);
    setTimeout(() => this.committedById.delete(id), this.ttlMs).unref();
  }

  /** A session a restarted server took up: live again, waiting (detached) for its agent. */
  adopt(session: Session, ttlLeftMs: number): void {
    this.byKey.set(session.key, session);
    this.byIdMap.set(session.id, session);
    this.keepFor(session, ttlLeftMs);
  }

  /** A session committed within the TTL, by ID. */
  committedSession(id: string): CommittedSession | undefined {
    return this.committedById.get(id);
  }

  /** Drops a session from the live ones (committed or discarded). */
  forget(session: Session): void {
    this.clearTtl(session);
    if (this.byKey.get(session.key) === session) this.byKey.delete(session.key);
    this.byIdMap.delete(session.id);
  }

  /** Ends a session without committing: closes its connections and deletes its temporary files. */
  async discard(session: Session, reason: string, result: SessionResult = 'failed'): Promise<void> {
    if (session.closed) return;
    session.closed = true;
    this.onDiscard(result);
    this.forget(session);
    session.link.destroy();
    if (session.mode === 'parallel') {
      session.chunks.closeAll();
      await session.chunks.assembler.dispose();
    } else {
      await session.receiver.flushed().catch(() => undefined);
    }
    await session.storage.removeTemp(session.temp);
    this.log.warn({ ...sessionContext(session), reason }, 'session discarded');
    this.onRelease(session.key);
  }

  private clearTtl(session: Session): void {
    const timer = this.ttlTimers.get(session);
    if (timer) clearTimeout(timer);
    this.ttlTimers.delete(session);
  }
}

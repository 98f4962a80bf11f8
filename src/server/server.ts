import crypto from 'node:crypto';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { AckStatus, FinalStatus, HealthStatus, ParallelStatus, ResumeStatus, isSupportedVersion } from '../../protocol/constants.js';
import {
  decodeClientHello,
  decodeMode,
  decodeTrailer,
  encodeAck,
  encodeFinalAck,
  encodeHealthPong,
  encodeParallelAck,
  encodeResumeAck,
  encodeSack,
  type Handshake,
  type ParallelJoin,
  type Resume,
} from '../../protocol/frames.js';
import { nameProblem } from '../../protocol/names.js';
import type { ServerConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket } from '../net/frame-socket.js';
import { loadTlsMaterial, serverTlsOptions } from '../tls/material.js';
import { BodyReceiver } from './body-receiver.js';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ParallelState, receiveChunks } from './parallel.js';
import { Storage } from './storage.js';

/**
 * The listener: accepts mTLS connections, reads the 4-byte magic that says what a connection is
 * within the handshake deadline, and serves it. A malformed or hostile connection is closed and
 * logged; it never affects any other connection.
 */
const SACK_EVERY = 1024 * 1024;

/** How long after the last write the server acknowledges a quiet stream anyway. */
const IDLE_SACK_MS = 250;

/**
 * A backup session outlives its connection: when the connection breaks, the temporary file, the
 * inline hash state and the held-back bytes wait (detached) for a RESUME until the TTL runs out.
 */
interface BackupSession {
  id: string;
  key: string;
  agent: string;
  storage: Storage;
  backup: string;
  startedAt: number;
  temp: { path: string; fd: number };
  /** Single stream: the body receiver. Parallel: unused (the assembler writes the file). */
  receiver: BodyReceiver;
  /** Parallel sessions only: streams and assembler. The primary is `socket`. */
  parallel: ParallelState | null;
  /** The connection currently feeding the session, or null while detached. */
  socket: tls.TLSSocket | null;
  /** Settles when the current connection has finished with the session (any outcome). */
  attached: Promise<void> | null;
  ttlTimer: NodeJS.Timeout | null;
  resumes: number;
  closed: boolean;
}

export class BackupServer {
  private readonly server: tls.Server;
  private readonly storages = new Map<string, Storage>();
  /** agent:storage:backup → session (BUSY while attached), and sessionID → session (RESUME). */
  private readonly active = new Map<string, BackupSession>();
  private readonly byId = new Map<string, BackupSession>();
  private readonly sockets = new Set<tls.TLSSocket>();

  constructor(
    private readonly config: ServerConfig,
    private readonly log: Logger,
  ) {
    const material = loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.server_cert, key: config.tls.server_key });
    for (const [name, sc] of Object.entries(config.storages)) this.storages.set(name, new Storage(name, sc));
    this.server = tls.createServer({
      ...serverTlsOptions(material),
      allowHalfOpen: true,
      handshakeTimeout: config.server.handshake_timeout,
    });
    this.server.on('secureConnection', (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err, socket) => {
      this.log.warn({ remote: socket.remoteAddress, err: err.message }, 'TLS handshake refused');
    });
  }

  /** Removes temporary files no live session owns, then listens. Resolves with the bound port. */
  async start(): Promise<number> {
    for (const storage of this.storages.values()) {
      for (const tmp of await storage.tempFiles()) {
        await fs.promises.rm(tmp, { force: true });
        this.log.info({ file: tmp, storage: storage.name }, 'removed orphan temporary file');
      }
    }
    const { host, port } = this.config.server;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const bound = (this.server.address() as AddressInfo).port;
    this.log.info({ host, port: bound, storages: [...this.storages.keys()] }, 'listening');
    return bound;
  }

  /** Stops accepting; closes open connections after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const timer = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }

  private accept(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {
      /* reported where the connection is served */
    });
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.serve(socket, remote).catch((err) => {
      this.log.warn({ remote, err: errorMessage(err) }, 'connection closed');
      socket.destroy();
    });
  }

  private async serve(socket: tls.TLSSocket, remote: string): Promise<void> {
    const frames = new FrameSocket(socket);
    const hello = await frames.read(decodeClientHello, this.config.server.handshake_timeout, 'handshake');
    switch (hello.kind) {
      case 'NBKP':
        return this.serveBackup(socket, frames, hello.value, remote);
      case 'RSME':
        return this.serveResume(socket, frames, hello.value, remote);
      case 'PJIN':
        return this.serveJoin(socket, frames, hello.value, remote);
      case 'PING':
        return this.serveHealth(socket);
      default:
        throw new NbackupError('protocol', `connection kind ${hello.kind} is not served by this server version`);
    }
  }

  private async serveHealth(socket: tls.TLSSocket): Promise<void> {
    let free = Number.MAX_SAFE_INTEGER;
    let low = false;
    for (const s of this.storages.values()) {
      const f = await s.freeBytes();
      free = Math.min(free, f);
      if (f < s.config.min_free) low = true;
    }
    // A session waiting (detached) for a resume is not work in progress.
    const running = [...this.active.values()].some((s) => s.socket !== null);
    const status = low ? HealthStatus.LOW_DISK : running ? HealthStatus.BUSY : HealthStatus.READY;
    socket.end(encodeHealthPong({ status, freeBytes: free }));
  }

  /** Checks a handshake; returns the storage, or answers the refusal and returns null. */
  private async admit(socket: tls.TLSSocket, hs: Handshake, remote: string): Promise<Storage | null> {
    const refuse = (status: AckStatus, message: string): null => {
      this.log.warn({ remote, agent: hs.agent, storage: hs.storage, backup: hs.backup, status, reason: message }, 'session refused');
      socket.end(encodeAck({ status, message, sessionId: '' }));
      return null;
    };
    if (!isSupportedVersion(hs.version)) return refuse(AckStatus.REJECT, `unsupported protocol version ${hs.version}`);
    for (const [what, value] of [
      ['agent', hs.agent],
      ['storage', hs.storage],
      ['backup', hs.backup],
    ] as const) {
      const problem = nameProblem(value);
      if (problem) return refuse(AckStatus.REJECT, `${what} name ${problem}`);
    }
    const certName = peerName(socket);
    if (certName !== hs.agent) {
      return refuse(AckStatus.REJECT, `agent name "${hs.agent}" does not match certificate CN "${certName ?? ''}"`);
    }
    const storage = this.storages.get(hs.storage);
    if (!storage) return refuse(AckStatus.STORAGE_NOT_FOUND, `storage "${hs.storage}" is not configured`);
    const free = await storage.freeBytes();
    if (free < storage.config.min_free) {
      return refuse(AckStatus.FULL, `storage "${storage.name}" has ${free} bytes free, below its reserve of ${storage.config.min_free}`);
    }
    return storage;
  }

  private async serveBackup(socket: tls.TLSSocket, frames: FrameSocket, hs: Handshake, remote: string): Promise<void> {
    const storage = await this.admit(socket, hs, remote);
    if (!storage) return;
    const key = `${hs.agent}:${hs.storage}:${hs.backup}`;
    const existing = this.active.get(key);
    if (existing && existing.socket && !existing.socket.destroyed) {
      socket.end(encodeAck({ status: AckStatus.BUSY, message: `a backup of ${key} is already running`, sessionId: '' }));
      return;
    }
    // A detached session of the same backup (or one whose connection is already gone but not yet
    // wound up) is superseded: the agent chose to start over.
    if (existing) {
      await existing.attached;
      await this.discard(existing, 'superseded by a new session of the same backup');
    }
    if (this.active.has(key)) {
      socket.end(encodeAck({ status: AckStatus.BUSY, message: `a backup of ${key} is already running`, sessionId: '' }));
      return;
    }
    const id = crypto.randomUUID();
    const session: BackupSession = {
      id,
      key,
      agent: hs.agent,
      storage,
      backup: hs.backup,
      startedAt: Date.now(),
      temp: { path: '', fd: -1 },
      receiver: null as unknown as BodyReceiver,
      parallel: null,
      socket,
      attached: null,
      ttlTimer: null,
      resumes: 0,
      closed: false,
    };
    this.active.set(key, session);
    try {
      session.temp = await storage.createTemp(hs.agent, hs.backup, id);
    } catch (err) {
      this.active.delete(key);
      socket.end(encodeAck({ status: AckStatus.FULL, message: `cannot create temporary file: ${errorMessage(err)}`, sessionId: '' }));
      throw err;
    }
    session.receiver = new BodyReceiver(session.temp.fd);
    this.byId.set(id, session);
    socket.write(encodeAck({ status: AckStatus.GO, message: '', sessionId: id }));
    this.log.info({ ...this.ctx(session), remote }, 'session started');
    const mode = await frames.read(decodeMode, this.config.server.handshake_timeout, 'stream mode').catch(async (err: unknown) => {
      await this.discard(session, `no stream mode: ${errorMessage(err)}`);
      throw err;
    });
    if (mode.kind === 'parallel') {
      const { maxStreams, chunkSize } = mode;
      if (maxStreams < 1 || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
        await this.discard(session, `bad ParallelInit: ${maxStreams} streams of ${chunkSize}-byte chunks`);
        throw new NbackupError('protocol', `ParallelInit needs 1..255 streams and chunks of ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} bytes`);
      }
      session.parallel = new ParallelState(
        maxStreams,
        chunkSize,
        session.temp.fd,
        session.temp.path.replace(/\.tar\.gz\.tmp$/, '.staging.tmp'),
        storage.config.assembler_pending_mem_limit,
      );
      this.log.info({ ...this.ctx(session), maxStreams, chunkSize }, 'parallel session');
      await this.feedPrimary(session, socket, frames, remote);
      return;
    }
    await this.feed(session, socket, frames, remote);
  }

  /**
   * The primary connection of a parallel session: it carries only the trailer. Once the trailer is
   * in and every chunk up to its size is in the file, the session is verified and committed.
   */
  private async feedPrimary(session: BackupSession, socket: tls.TLSSocket, frames: FrameSocket, remote: string): Promise<void> {
    const par = session.parallel!;
    let settle!: () => void;
    session.attached = new Promise<void>((r) => (settle = r));
    socket.setKeepAlive(true, 30_000);
    try {
      let trailer;
      try {
        // The primary is quiet for the whole backup: its liveness is TCP keepalive's business.
        trailer = await frames.read(decodeTrailer, 7 * 24 * 3600 * 1000, 'trailer');
      } catch (err) {
        if (err instanceof NbackupError && (err.kind === 'network' || err.kind === 'timeout')) {
          // Ended or broken before the trailer: close our side too, keep the session for RSME.
          socket.destroy();
          this.detach(session, remote);
          return;
        }
        throw err;
      }
      par.trailer = trailer;
      const closed = new Promise<'closed'>((r) => socket.once('close', () => r('closed')));
      const reached = par.assembler.reach(trailer.size).then(
        () => 'reached' as const,
        () => 'failed' as const,
      );
      const outcome = await Promise.race([reached, closed]);
      if (outcome === 'closed') {
        this.detach(session, remote);
        return;
      }
      await par.assembler.settled();
      const a = par.assembler;
      if (a.failed) {
        await this.finishSession(session, socket, { failed: a.failed });
        return;
      }
      const sha = a.digest();
      const ok = a.written === trailer.size && sha.equals(trailer.sha256);
      const reason = a.written !== trailer.size ? `assembled ${a.written} bytes, trailer says ${trailer.size}` : 'SHA-256 differs';
      this.log.info({ ...this.ctx(session), streams: par.streams.size, ...a.stats }, 'parallel session assembled');
      await this.finishSession(session, socket, ok ? { ok: true, dataSize: a.written, sha256: sha.toString('hex') } : { ok: false, reason });
    } finally {
      if (session.socket === socket) session.socket = null;
      settle();
    }
  }

  /** `PJIN`: a data stream joins (or re-joins) a parallel session. */
  private async serveJoin(socket: tls.TLSSocket, frames: FrameSocket, join: ParallelJoin, remote: string): Promise<void> {
    const session = this.byId.get(join.sessionId);
    const refuse = (status: ParallelStatus, why: string): void => {
      this.log.warn({ remote, session: join.sessionId, stream: join.streamIndex, reason: why }, 'stream join refused');
      socket.end(encodeParallelAck({ status, lastOffset: 0 }));
    };
    if (!isSupportedVersion(join.version)) return refuse(ParallelStatus.NOT_FOUND, `unsupported protocol version ${join.version}`);
    if (!session || session.closed || !session.parallel) return refuse(ParallelStatus.NOT_FOUND, 'unknown or expired parallel session');
    if (peerName(socket) !== session.agent) return refuse(ParallelStatus.NOT_FOUND, 'certificate CN does not match the session agent');
    const par = session.parallel;
    if (join.streamIndex >= par.maxStreams) {
      return refuse(ParallelStatus.FULL, `stream ${join.streamIndex} is beyond the ${par.maxStreams} streams the session announced`);
    }
    const stream = par.stream(join.streamIndex);
    // A re-join replaces whatever connection still looks alive for that index (half-open link).
    if (stream.socket) {
      stream.socket.destroy();
      await stream.attached;
    }
    if (session.closed) return refuse(ParallelStatus.NOT_FOUND, 'session ended');
    let settle!: () => void;
    stream.attached = new Promise<void>((r) => (settle = r));
    stream.socket = socket;
    stream.joins++;
    try {
      socket.write(encodeParallelAck({ status: ParallelStatus.OK, lastOffset: stream.bytes }));
      this.log.info({ ...this.ctx(session), remote, stream: stream.index, lastOffset: stream.bytes, joins: stream.joins }, stream.joins > 1 ? 'stream re-joined' : 'stream joined');
      const outcome = await receiveChunks(par, stream, socket, frames.detach(), this.config.server.idle_timeout);
      if (outcome === 'broken' && !session.closed) {
        this.log.warn({ ...this.ctx(session), stream: stream.index, bytes: stream.bytes }, 'stream connection lost');
      }
    } finally {
      if (stream.socket === socket) stream.socket = null;
      settle();
    }
  }

  private async serveResume(socket: tls.TLSSocket, frames: FrameSocket, rs: Resume, remote: string): Promise<void> {
    const cn = peerName(socket);
    const session = this.byId.get(rs.sessionId);
    const notFound = (why: string): void => {
      this.log.warn({ remote, session: rs.sessionId, agent: rs.agent, reason: why }, 'resume refused');
      socket.end(encodeResumeAck({ status: ResumeStatus.NOT_FOUND, lastOffset: 0 }));
    };
    if (!isSupportedVersion(rs.version)) return notFound(`unsupported protocol version ${rs.version}`);
    if (cn !== rs.agent) return notFound(`agent name "${rs.agent}" does not match certificate CN "${cn ?? ''}"`);
    if (!session || session.closed) return notFound('unknown or expired session');
    if (session.agent !== rs.agent || session.storage.name !== rs.storage) return notFound('agent or storage does not match the session');
    // The old connection may still look alive here (a half-open link): the agent knows better.
    if (session.socket) {
      session.socket.destroy();
      await session.attached;
    }
    if (session.closed) return notFound('session ended');
    if (session.ttlTimer) clearTimeout(session.ttlTimer);
    session.ttlTimer = null;
    try {
      if (!session.parallel) await session.receiver.flushed();
    } catch {
      await this.discard(session, 'earlier write failed');
      return notFound('session failed');
    }
    session.socket = socket;
    session.resumes++;
    if (session.parallel) {
      // The primary of a parallel session carries no data: it re-attaches at offset 0.
      socket.write(encodeResumeAck({ status: ResumeStatus.OK, lastOffset: 0 }));
      this.log.info({ ...this.ctx(session), remote, resumes: session.resumes }, 'primary re-attached');
      await this.feedPrimary(session, socket, frames, remote);
      return;
    }
    const lastOffset = session.receiver.written;
    socket.write(encodeResumeAck({ status: ResumeStatus.OK, lastOffset }));
    this.log.info({ ...this.ctx(session), remote, lastOffset, resumes: session.resumes }, 'session resumed');
    await this.feed(session, socket, frames, remote);
  }

  /**
   * Runs one connection's share of a session: body bytes until EOF (then verify and commit) or
   * until the connection breaks (then the session waits, detached, for a RESUME).
   */
  private async feed(session: BackupSession, socket: tls.TLSSocket, frames: FrameSocket, remote: string): Promise<void> {
    let settle!: () => void;
    session.attached = new Promise<void>((r) => (settle = r));
    try {
      const outcome = await this.receiveBody(session, socket, frames);
      if (outcome === 'broken' || (!session.receiver.failed && !session.receiver.endsWithTrailer())) {
        socket.destroy();
        this.detach(session, remote);
        return;
      }
      await this.finishSession(session, socket);
    } finally {
      if (session.socket === socket) session.socket = null;
      settle();
    }
  }

  private async finishSession(session: BackupSession, socket: tls.TLSSocket, given?: Verdict | { failed: Error }): Promise<void> {
    const ctx = this.ctx(session);
    const receiver = session.receiver;
    const failed = given ? ('failed' in given ? given.failed : null) : receiver.failed;
    if (failed) {
      this.answerFinal(session, socket, FinalStatus.WRITE_ERROR);
      await this.discard(session, `write error: ${failed.message}`);
      return;
    }
    const verdict: Verdict = given && !('failed' in given) ? given : receiver.verify();
    if (!verdict.ok) {
      this.answerFinal(session, socket, FinalStatus.CHECKSUM_MISMATCH);
      this.log.error({ ...ctx, reason: verdict.reason, bytes: session.parallel ? session.parallel.assembler.written : receiver.received }, 'session failed: checksum mismatch');
      await this.discard(session, 'checksum mismatch');
      return;
    }
    try {
      const { file, removed } = await session.storage.commit(session.temp.path, session.temp.fd, verdict.dataSize);
      session.closed = true;
      this.forget(session);
      if (session.parallel) {
        session.parallel.closeStreams();
        await session.parallel.assembler.dispose();
      }
      socket.end(encodeFinalAck({ status: FinalStatus.OK }));
      const seconds = (Date.now() - session.startedAt) / 1000;
      this.log.info(
        {
          ...ctx,
          file,
          bytes: verdict.dataSize,
          sha256: verdict.sha256,
          resumes: session.resumes,
          durationS: Number(seconds.toFixed(3)),
          mbPerS: Number((verdict.dataSize / 1048576 / Math.max(seconds, 0.001)).toFixed(1)),
          rotated: removed,
        },
        'session committed',
      );
    } catch (err) {
      this.answerFinal(session, socket, FinalStatus.WRITE_ERROR);
      await this.discard(session, `commit failed: ${errorMessage(err)}`);
    }
  }

  /**
   * Sends a failing Final ACK and lets it drain: the connection is taken off the session first, so
   * the discard that follows does not destroy it with the answer still queued.
   */
  private answerFinal(session: BackupSession, socket: tls.TLSSocket, status: FinalStatus): void {
    if (session.socket === socket) session.socket = null;
    socket.end(encodeFinalAck({ status }));
    // A peer that never reads its answer does not keep the connection open forever.
    setTimeout(() => socket.destroy(), 10_000).unref();
  }

  /** The connection broke mid-body: keep the session for `session_ttl`, then delete it. */
  private detach(session: BackupSession, remote: string): void {
    if (session.closed) return;
    session.socket = null;
    const ttl = this.config.server.session_ttl;
    const received = session.parallel ? session.parallel.assembler.written : session.receiver.received;
    this.log.warn({ ...this.ctx(session), remote, received, ttlS: ttl / 1000 }, 'connection lost; session kept for resume');
    session.ttlTimer = setTimeout(() => {
      void this.discard(session, `not resumed within ${Math.round(ttl / 1000)}s; temporary file deleted`);
    }, ttl);
    session.ttlTimer.unref();
  }

  /** Ends a session without committing: closes and deletes its temporary file. */
  private async discard(session: BackupSession, reason: string): Promise<void> {
    if (session.closed) return;
    session.closed = true;
    this.forget(session);
    session.socket?.destroy();
    if (session.parallel) {
      session.parallel.closeStreams();
      await session.parallel.assembler.dispose();
    }
    await session.receiver?.flushed().catch(() => undefined);
    if (session.temp.fd >= 0) await closeQuietly(session.temp.fd);
    if (session.temp.path) await fs.promises.rm(session.temp.path, { force: true });
    this.log.warn({ ...this.ctx(session), reason }, 'session discarded');
  }

  private forget(session: BackupSession): void {
    if (session.ttlTimer) clearTimeout(session.ttlTimer);
    session.ttlTimer = null;
    if (this.active.get(session.key) === session) this.active.delete(session.key);
    this.byId.delete(session.id);
  }

  private ctx(s: BackupSession): Record<string, unknown> {
    return { session: s.id, agent: s.agent, storage: s.storage.name, backup: s.backup };
  }

  /**
   * Streams body bytes into the session until the agent half-closes ('eof', everything flushed)
   * or the connection breaks or goes silent for `idle_timeout` ('broken', everything flushed).
   */
  private receiveBody(session: BackupSession, socket: tls.TLSSocket, frames: FrameSocket): Promise<'eof' | 'broken'> {
    const receiver = session.receiver;
    return new Promise((resolve) => {
      let lastSack = receiver.written;
      let done = false;
      let idleSack: NodeJS.Timeout | null = null;
      const sack = (): void => {
        if (receiver.written > lastSack && socket.writable) {
          lastSack = receiver.written;
          socket.write(encodeSack({ offset: lastSack }));
        }
      };
      const onWritten = (written: number): void => {
        if (written - lastSack >= SACK_EVERY) sack();
        if (done) return;
        if (idleSack) clearTimeout(idleSack);
        idleSack = setTimeout(sack, IDLE_SACK_MS);
      };
      receiver.setOnWritten(onWritten);
      const idle = this.config.server.idle_timeout;
      socket.setTimeout(idle);
      const finish = (outcome: 'eof' | 'broken'): void => {
        if (done) return;
        done = true;
        if (idleSack) clearTimeout(idleSack);
        socket.setTimeout(0);
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('close', onClose);
        socket.off('timeout', onTimeout);
        if (outcome === 'broken') socket.destroy();
        // Either way the file must hold every byte accepted before anyone looks at offsets. After
        // a half-close the agent still hears about every 1 MiB written, and the final offset.
        const settled = (): void => {
          if (outcome === 'eof') sack();
          receiver.setOnWritten(undefined);
          resolve(outcome);
        };
        receiver.flushed().then(settled, settled);
      };
      const onData = (chunk: Buffer): void => {
        receiver.push(chunk);
        if (receiver.congested) {
          socket.pause();
          void receiver.drained().then(() => socket.resume());
        }
      };
      const onEnd = (): void => finish('eof');
      const onClose = (): void => finish('broken');
      const onTimeout = (): void => {
        this.log.warn({ ...this.ctx(session), idleS: idle / 1000 }, 'no data within the idle timeout; closing the connection');
        finish('broken');
      };
      socket.on('data', onData);
      socket.on('end', onEnd);
      socket.on('close', onClose);
      socket.on('timeout', onTimeout);
      const early = frames.detach();
      if (early.length > 0) onData(early);
    });
  }
}

type Verdict = { ok: true; dataSize: number; sha256: string } | { ok: false; reason: string };

function peerName(socket: tls.TLSSocket): string | undefined {
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}

function closeQuietly(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()));
}

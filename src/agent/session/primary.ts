import type tls from 'node:tls';
import { AckStatus, ResumeStatus, statusName } from '../../../protocol/constants.js';
import { decodeAck, decodeResumeAck, encodeHandshake, encodeParallelInit, encodeResume, encodeSingleMode } from '../../../protocol/frames.js';
import type { BackupConfig } from '../../config/index.js';
import { NbackupError } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { FrameSocket } from '../../net/frame-socket.js';
import { connectAndGreet } from './connect.js';
import type { BackupContext, RunStats } from './context.js';
import { RestartSession, type RetryBudget } from './retry.js';

/** WAIT on the handshake (version 4): the server is at max_concurrent_sessions; try again when admitted. */
export class ServerBusy extends NbackupError {
  constructor(message: string) {
    super('rejected', message);
  }
}

/** What a resume found: where to continue, or that the session is already committed. */
export type Reattached = { offset: number } | { committed: { size: number; sha256: Buffer } };

/**
 * The session's first connection, shared by both modes: it opens the session (NBKP handshake, ACK
 * GO, mode byte) and, when it breaks, is replaced by a new connection that takes the session over
 * (RSME). In a single-stream session it carries the body; in a parallel one only the trailer.
 */
export class PrimaryConnection {
  private constructor(
    private conn: { socket: tls.TLSSocket; frames: FrameSocket },
    readonly sessionId: string,
    private readonly ctx: BackupContext,
    private readonly entry: BackupConfig,
    private readonly log: Logger,
    private readonly stats: RunStats,
  ) {}

  get socket(): tls.TLSSocket {
    return this.conn.socket;
  }

  get frames(): FrameSocket {
    return this.conn.frames;
  }

  /**
   * Connects (retrying within `budget`), opens a new session and announces its mode: single
   * stream, or `parallels` streams of `resume.chunk_size` chunks. A refusal is a 'rejected' error;
   * a connection closed before the answer is tried again within `budget`.
   */
  static open(ctx: BackupContext, entry: BackupConfig, log: Logger, stats: RunStats, budget: RetryBudget): Promise<PrimaryConnection> {
    return connectAndGreet(ctx, log, stats, budget, async (socket) => {
      const frames = new FrameSocket(socket);
      socket.write(encodeHandshake({ agent: ctx.config.agent.name, storage: entry.storage, backup: entry.name, format: entry.compression.format }));
      const ack = await frames.read(decodeAck, ctx.config.retry.connect_timeout, 'handshake answer');
      if (ack.status !== AckStatus.GO) {
        const why = `${statusName(AckStatus, ack.status)}${ack.message ? ` (${ack.message})` : ''}`;
        if (ack.status === AckStatus.WAIT) throw new ServerBusy(`server asks to wait: ${why}`);
        throw new NbackupError('rejected', `server refused the backup: ${why}`);
      }
      socket.write(entry.parallels > 0 ? encodeParallelInit({ maxStreams: entry.parallels, chunkSize: entry.resume.chunk_size }) : encodeSingleMode());
      return new PrimaryConnection({ socket, frames }, ack.sessionId, ctx, entry, log, stats);
    });
  }

  /**
   * Replaces the connection with a new one that takes the session over (RSME). Resolves with the
   * server's offset, or with what it committed when the session is already committed (its Final
   * ACK was lost); throws RestartSession when the server no longer has the session.
   */
  async reattach(budget: RetryBudget): Promise<Reattached> {
    this.conn.socket.destroy();
    this.stats.reconnects++;
    // A server that takes the connection but closes it, or says nothing, before its ResumeACK (a
    // server restarting, a connection limit) is retried like a failed connect, within the budget.
    return connectAndGreet(this.ctx, this.log, this.stats, budget, async (socket): Promise<Reattached> => {
      const frames = new FrameSocket(socket);
      socket.write(encodeResume({ sessionId: this.sessionId, agent: this.ctx.config.agent.name, storage: this.entry.storage }));
      const answer = await frames.read(decodeResumeAck, this.ctx.config.retry.connect_timeout, 'resume answer');
      if (answer.status === ResumeStatus.COMMITTED && answer.sha256) {
        socket.destroy();
        return { committed: { size: answer.lastOffset, sha256: answer.sha256 } };
      }
      if (answer.status !== ResumeStatus.OK) {
        throw new RestartSession(`server no longer has session ${this.sessionId} (${statusName(ResumeStatus, answer.status)})`);
      }
      this.conn = { socket, frames };
      return { offset: answer.lastOffset };
    });
  }

  destroy(): void {
    this.conn.socket.destroy();
  }
}

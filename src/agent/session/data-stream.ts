import type tls from 'node:tls';
import { CHUNK_HEADER_SIZE, ParallelStatus, statusName } from '../../../protocol/constants.js';
import { decodeChunkSack, decodeParallelAck, encodeChunkHeader, encodeParallelJoin } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { FrameSocket } from '../../net/frame-socket.js';
import type { RingBuffer } from '../pipeline/ring-buffer.js';
import type { Chunk, ChunkDispatcher, Sent } from './chunk-dispatcher.js';
import { connectServer } from '../../net/connect-server.js';
import { NO_DEADLINE_MS, backoffSignal, sendSlice, sliceSize, type BackupContext, type RunStats } from './context.js';
import { LinkWatchdog } from './link-watchdog.js';
import { RestartSession, backoff, isRetryable, sleep } from './retry.js';

/**
 * One data stream of a parallel session, for the whole backup: join with PJIN, send the chunks
 * the dispatcher hands out (at most `window` bytes unacknowledged), take their ChunkSACKs. A broken
 * stream re-joins with backoff (`retry.initial_delay` doubling) and continues from the server's
 * offset for it; after REJOIN_ATTEMPTS failed re-joins it is dead and its unacknowledged chunks go
 * back to the dispatcher for the live streams.
 */

/** Failed re-join attempts after which a stream is dead. */
export const REJOIN_ATTEMPTS = 3;

export interface StreamEnv {
  ctx: BackupContext;
  log: Logger;
  stats: RunStats;
  sessionId: string;
  ring: RingBuffer;
  dispatcher: ChunkDispatcher;
  /** Unacknowledged bytes one stream may hold before it waits for ChunkSACKs. */
  window: number;
  progress: () => void;
}

export class DataStream {
  /** Chunks to (re)send before taking new ones. */
  private readonly queue: Chunk[] = [];
  /** Sent, not yet acknowledged, in stream order. */
  private readonly inflight: Sent[] = [];
  /** Stream bytes (headers + payloads) sent on this stream so far. */
  private offset = 0;
  private ackWaiters: (() => void)[] = [];
  private readonly log: Logger;
  joins = 0;
  /** ChunkSACKs heard on all of this stream's connections. */
  private sacks = 0;
  /** Rotations done at the server's request (CROT). */
  rotations = 0;
  /** A rotation asked for: resolved once this stream's chunks are all acknowledged. */
  private rotation: (() => void) | null = null;
  private rotationDone: Promise<void> | null = null;
  socket: tls.TLSSocket | null = null;
  state: 'joining' | 'live' | 'dead' | 'done' = 'joining';

  constructor(
    readonly index: number,
    private readonly env: StreamEnv,
  ) {
    this.log = env.log.child({ session: env.sessionId, stream: index });
  }

  /** Runs the stream until everything is acknowledged ('done') or it dies ('dead'). */
  async run(): Promise<void> {
    const { ctx, stats } = this.env;
    let failedJoins = 0;
    let broken = false;
    for (;;) {
      if (broken) {
        if (failedJoins >= REJOIN_ATTEMPTS) return this.die(failedJoins);
        await sleep(backoff(ctx.config.retry, failedJoins + 1), backoffSignal(ctx));
        stats.reconnects++;
        this.env.progress();
      }
      let joined: { socket: tls.TLSSocket; frames: FrameSocket };
      try {
        joined = await this.join();
      } catch (err) {
        if (err instanceof RestartSession || !isRetryable(err)) throw err;
        failedJoins++;
        broken = true;
        this.log.warn({ err: errorMessage(err), attempt: failedJoins }, 'stream re-join failed');
        continue;
      }
      this.joins++;
      if (this.joins > 1) this.log.info({ lastOffset: this.offset, resending: this.queue.length }, 'stream re-joined');
      // A join counts as good only once the connection carried an acknowledgement: a server (or a
      // link) that takes PJIN and then drops every connection still ends the stream after
      // REJOIN_ATTEMPTS, instead of keeping it re-joining until the run limit.
      const sacksAtJoin = this.sacks;
      this.socket = joined.socket;
      this.state = 'live';
      try {
        if ((await this.pump(joined.socket, joined.frames)) === 'rotate') {
          // Drained and closed at the server's request: a new connection takes over at once.
          this.socket = null;
          this.state = 'joining';
          this.rotations++;
          failedJoins = 0;
          this.log.info({ offset: this.offset, rotations: this.rotations }, 'stream rotated; re-joining');
          continue;
        }
        this.state = 'done';
        return;
      } catch (err) {
        joined.socket.destroy();
        this.socket = null;
        this.state = 'joining';
        if (!isRetryable(err)) throw err;
        broken = true;
        // A re-joined connection lost before any acknowledgement counts as a failed re-join; the
        // first connection's loss does not (its re-joins are the ones counted).
        failedJoins = this.sacks > sacksAtJoin || this.joins === 1 ? 0 : failedJoins + 1;
        this.log.warn({ err: errorMessage(err), offset: this.offset, unacknowledged: this.inflight.length, attempt: failedJoins }, 'stream connection lost; re-joining');
      }
    }
  }

  private die(attempts: number): void {
    this.state = 'dead';
    const orphans = [...this.inflight.map((s) => s.chunk), ...this.queue];
    this.queue.length = 0;
    this.inflight.length = 0;
    this.log.error({ attempts, handedOver: orphans.length }, 'stream is dead; its unacknowledged chunks go to the live streams');
    for (const c of orphans) this.env.stats.bytesResent += c.length;
    this.env.dispatcher.orphan(orphans);
  }

  /** Connects and sends PJIN; on OK, reconciles with the server's offset for this stream. */
  private async join(): Promise<{ socket: tls.TLSSocket; frames: FrameSocket }> {
    const { ctx, sessionId } = this.env;
    const { config } = ctx;
    let socket: tls.TLSSocket | null = null;
    try {
      // Only the run's abort ends a join under way: a stopping daemon lets a sending backup finish.
      socket = await connectServer(config.server, ctx.material, config.retry.connect_timeout, ctx.signal);
      const frames = new FrameSocket(socket);
      socket.write(encodeParallelJoin({ sessionId, streamIndex: this.index }));
      const answer = await frames.read(decodeParallelAck, config.retry.connect_timeout, 'join answer');
      if (answer.status === ParallelStatus.NOT_FOUND) {
        throw new RestartSession(`server no longer has session ${sessionId} (stream ${this.index} join: NOT_FOUND)`);
      }
      if (answer.status !== ParallelStatus.OK) {
        throw new NbackupError('rejected', `server refused stream ${this.index}: ${statusName(ParallelStatus, answer.status)}`);
      }
      this.reconcile(answer.lastOffset);
      return { socket, frames };
    } catch (err) {
      socket?.destroy();
      throw err;
    }
  }

  /**
   * After a (re-)join: keep what the server has, queue the rest again, continue at its offset.
   * A server that has less than it acknowledged (it lost data in a crash) cannot be helped by
   * sending again: those chunks left the ring, so the session starts over.
   */
  private reconcile(lastOffset: number): void {
    if (lastOffset > this.offset) {
      throw new NbackupError('protocol', `server has ${lastOffset} bytes of stream ${this.index}, but only ${this.offset} were sent`);
    }
    const resend: Sent[] = [];
    while (this.inflight.length > 0 && this.inflight[this.inflight.length - 1].start >= lastOffset) resend.unshift(this.inflight.pop()!);
    const last = this.inflight[this.inflight.length - 1];
    if (last && last.end !== lastOffset) {
      throw new NbackupError('protocol', `server offset ${lastOffset} of stream ${this.index} is not a chunk boundary`);
    }
    const sentFrom = resend[0]?.start ?? this.offset;
    if (!last && lastOffset < sentFrom) {
      throw new RestartSession(`the server has lost acknowledged chunks of stream ${this.index} (it has ${lastOffset} bytes, ${sentFrom} were acknowledged)`);
    }
    for (const r of resend) this.env.stats.bytesResent += r.chunk.length;
    this.queue.unshift(...resend.map((r) => r.chunk));
    this.offset = lastOffset;
  }

  /**
   * CROT: stop taking chunks, wait until everything sent on this stream is acknowledged, then
   * resolve (the agent answers CRAK) and re-join on a new connection. A stream that is not
   * sending (joining, finished, dead) has nothing to drain.
   */
  rotate(): Promise<void> {
    if (this.state !== 'live') return Promise.resolve();
    this.rotationDone ??= new Promise<void>((resolve) => {
      this.rotation = resolve;
      this.acked();
    });
    return this.rotationDone;
  }

  private get inflightBytes(): number {
    return this.inflight.reduce((n, s) => n + s.chunk.length, 0);
  }

  private acked(): void {
    const w = this.ackWaiters;
    this.ackWaiters = [];
    for (const resolve of w) resolve();
  }

  private nextAck(): Promise<void> {
    return new Promise((resolve) => this.ackWaiters.push(resolve));
  }

  /**
   * Sends chunks on one connection and takes its ChunkSACKs until everything is acknowledged:
   * 'done' when the backup's chunks ran out, 'rotate' when drained for a rotation.
   */
  private async pump(socket: tls.TLSSocket, frames: FrameSocket): Promise<'done' | 'rotate'> {
    const { dispatcher, ctx } = this.env;
    const readTimeout = ctx.config.retry.read_timeout;
    // A stream's chunks may rightly wait unacknowledged on the server for a slower stream's chunk,
    // so silence alone proves nothing: the stream must hold the session's oldest unacknowledged
    // chunk, and neither it nor the session got an acknowledgement nor sent a byte.
    const watchdog = new LinkWatchdog(socket, {
      readTimeoutMs: readTimeout,
      owed: () => this.inflight.length > 0 && this.inflight[0].chunk.seq === dispatcher.lowest,
      countSendProgress: true,
      sharedProgress: () => dispatcher.lastProgress,
      message: `stream ${this.index}: no acknowledgement and no progress for ${Math.round(readTimeout / 1000)}s`,
    });
    let sending = true;
    const acks = this.takeAcks(frames, watchdog, () => sending);
    const sender = (async (): Promise<'done' | 'rotate'> => {
      const why = await this.sendChunks(socket, acks, watchdog);
      // Everything acknowledged: this connection is finished.
      sending = false;
      socket.end();
      return why;
    })();
    sender.catch(() => undefined);
    acks.catch(() => undefined);
    try {
      const [why] = await Promise.all([sender, acks]);
      // Drained for a rotation, or finished while one was asked: either way nothing is in flight.
      const drained = this.rotation;
      this.rotation = null;
      this.rotationDone = null;
      drained?.();
      return why;
    } catch (err) {
      socket.destroy();
      throw watchdog.error ?? err;
    } finally {
      watchdog.stop();
    }
  }

  private async takeAcks(frames: FrameSocket, watchdog: LinkWatchdog, sending: () => boolean): Promise<void> {
    for (;;) {
      let sack;
      try {
        sack = await frames.read(decodeChunkSack, NO_DEADLINE_MS, 'chunk acknowledgement');
      } catch (err) {
        // The server closes its side after our half-close, once everything is acknowledged.
        if (!sending() && this.inflight.length === 0 && err instanceof NbackupError && err.kind === 'network') return;
        throw err;
      }
      if (sack.streamIndex !== this.index) throw new NbackupError('protocol', `ChunkSACK for stream ${sack.streamIndex} on stream ${this.index}`);
      if (sack.offset > this.offset) throw new NbackupError('protocol', `ChunkSACK offset ${sack.offset} beyond the ${this.offset} bytes sent`);
      while (this.inflight.length > 0 && this.inflight[0].end <= sack.offset) this.env.dispatcher.ack(this.inflight.shift()!.chunk);
      watchdog.heard();
      this.sacks++;
      this.acked();
      this.env.progress();
    }
  }

  private async sendChunks(socket: tls.TLSSocket, acks: Promise<void>, watchdog: LinkWatchdog): Promise<'done' | 'rotate'> {
    const { dispatcher, ring, stats, window } = this.env;
    for (;;) {
      if (this.rotation) {
        while (this.inflight.length > 0) await Promise.race([this.nextAck(), acks]);
        return 'rotate';
      }
      // A full window waits for acknowledgements, except for a dead stream's chunks: they are the
      // oldest, and the chunks filling every window may be waiting on the server for them.
      let chunk: Chunk | null | undefined = this.queue.shift();
      while (!chunk && this.inflightBytes >= window) {
        chunk = dispatcher.takeOrphan();
        if (!chunk) await Promise.race([this.nextAck(), dispatcher.changed(), acks]);
      }
      chunk ??= await dispatcher.take(acks);
      if (socket.destroyed || chunk === undefined) {
        if (chunk) this.queue.unshift(chunk);
        throw watchdog.error ?? new NbackupError('network', `stream ${this.index} connection closed`);
      }
      if (chunk === null) return 'done';
      if (this.rotation) {
        // Asked to rotate while waiting for it: it goes out on the next connection.
        this.queue.unshift(chunk);
        continue;
      }
      // In flight before the first byte is written: a break now re-queues it, never loses it.
      const sent: Sent = { chunk, start: this.offset, end: this.offset + CHUNK_HEADER_SIZE + chunk.length };
      this.inflight.push(sent);
      this.offset = sent.end;
      socket.write(encodeChunkHeader({ globalSeq: chunk.seq, length: chunk.length }));
      for (let off = 0; off < chunk.length; ) {
        const view = ring.read(chunk.start + off, Math.min(sliceSize(this.env.ctx), chunk.length - off));
        off += view.length;
        stats.bytesSent += view.length;
        await sendSlice(this.env.ctx, socket, view);
      }
      stats.highWater = Math.max(stats.highWater, chunk.start + chunk.length);
      this.env.progress();
    }
  }
}

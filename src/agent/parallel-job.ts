import type tls from 'node:tls';
import { CHUNK_HEADER_SIZE, FinalStatus, ParallelStatus, ResumeStatus, statusName } from '../../protocol/constants.js';
import {
  decodeChunkSack,
  decodeFinalAck,
  decodeParallelAck,
  decodeResumeAck,
  encodeChunkHeader,
  encodeParallelJoin,
  encodeResume,
} from '../../protocol/frames.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket, writeWithBackpressure } from '../net/frame-socket.js';
import { AutoScaler } from './autoscaler.js';
import type { BackupEntry } from './backup-job.js';
import { connectServer } from './connection.js';
import type { RingBuffer } from './ring-buffer.js';
import { RestartSession, SEND_SLICE, backoff, connectWithRetry, isRetryable, sleep, type BackupContext, type RunStats } from './session-common.js';

/**
 * Agent side of a parallel session (protocol §3). The compressed stream in the ring buffer is cut
 * into `chunk_size` chunks numbered 0, 1, 2 …; each data stream (its own TLS connection, joined
 * with PJIN) pulls the next chunk whenever it has window room, so chunks go round-robin to the
 * live streams that can take them. A chunk stays in the ring until its ChunkSACK; the ring's tail
 * is the lowest unacknowledged chunk, so the ring bounds memory and how far streams can drift apart.
 *
 * A broken stream re-joins with backoff (`retry.initial_delay` doubling: 1 s, 2 s, 4 s by default)
 * and continues from the server's offset for that stream; after 3 failed re-joins it is dead and its
 * unacknowledged chunks go to the live streams. The backup fails only when every stream is dead.
 * The primary connection carries only the trailer, once every chunk is acknowledged.
 */
export interface ParallelArgs {
  entry: BackupEntry;
  ctx: BackupContext;
  blog: Logger;
  stats: RunStats;
  sessionId: string;
  primary: tls.TLSSocket;
  primaryFrames: FrameSocket;
  ring: RingBuffer;
  pipeline: Promise<void>;
  trailer: () => Buffer | null;
}

/** Failed re-join attempts after which a stream is dead. */
export const REJOIN_ATTEMPTS = 3;
const AUTOSCALE_WINDOW_MS = 1000;
const FOREVER = 7 * 24 * 3600 * 1000;

interface Chunk {
  seq: number;
  /** Offset in the compressed stream (the ring). */
  start: number;
  length: number;
}

/** A chunk on the wire of one stream: stream offsets of its header and of its end. */
interface Sent {
  chunk: Chunk;
  start: number;
  end: number;
}

/** Cuts the ring into chunks, hands them out, and frees the ring as chunks are acknowledged. */
class Dispatcher {
  private nextSeq = 0;
  /** Every chunk below `low` is acknowledged. */
  private low = 0;
  private readonly acked = new Set<number>();
  private readonly orphans: Chunk[] = [];
  private waiters: (() => void)[] = [];
  private failure: Error | null = null;
  ackedBytes = 0;
  /** When a chunk was last acknowledged on any stream. */
  lastProgress = Date.now();

  constructor(
    private readonly ring: RingBuffer,
    readonly chunkSize: number,
  ) {}

  /** All chunks cut, and every one acknowledged. */
  get complete(): boolean {
    return this.ring.ended && this.low * this.chunkSize >= this.ring.head && this.orphans.length === 0;
  }

  /**
   * The next chunk to send: an orphan first, else the next cut; null once everything is
   * acknowledged; undefined if `cancel` settled first (then nothing was handed out).
   */
  async take(cancel: Promise<unknown>): Promise<Chunk | null | undefined> {
    let cancelled = false;
    const stop = cancel.then(
      () => void (cancelled = true),
      () => void (cancelled = true),
    );
    for (;;) {
      if (this.failure) throw this.failure;
      if (cancelled) return undefined;
      const orphan = this.orphans.shift();
      if (orphan) return orphan;
      const start = this.nextSeq * this.chunkSize;
      const head = this.ring.head;
      if (head >= start + this.chunkSize || (this.ring.ended && head > start)) {
        return { seq: this.nextSeq++, start, length: Math.min(this.chunkSize, head - start) };
      }
      if (this.complete) return null;
      const changed = this.changed();
      await Promise.race([stop, changed, ...(this.ring.ended ? [] : [this.ring.waitForData(head)])]);
    }
  }

  /** The lowest chunk not yet acknowledged. */
  get lowest(): number {
    return this.low;
  }

  /** A dead stream's chunk, if one waits. */
  takeOrphan(): Chunk | undefined {
    return this.orphans.shift();
  }

  ack(chunk: Chunk): void {
    if (chunk.seq < this.low || this.acked.has(chunk.seq)) return;
    this.acked.add(chunk.seq);
    this.ackedBytes += chunk.length;
    this.lastProgress = Date.now();
    while (this.acked.delete(this.low)) this.low++;
    this.ring.release(Math.min(this.low * this.chunkSize, this.ring.head));
    this.wake();
  }

  /** Chunks of a dead stream: sent again, lowest first, by whichever stream asks next. */
  orphan(chunks: Chunk[]): void {
    for (const c of chunks) if (c.seq >= this.low && !this.acked.has(c.seq)) this.orphans.push(c);
    this.orphans.sort((a, b) => a.seq - b.seq);
    this.wake();
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  /** Resolves at the next ack, orphan or failure. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }
}

class DataStream {
  /** Chunks to (re)send before taking new ones. */
  readonly queue: Chunk[] = [];
  /** Sent, not yet acknowledged, in stream order. */
  readonly inflight: Sent[] = [];
  /** Stream bytes (headers + payloads) sent on this stream so far. */
  offset = 0;
  joins = 0;
  socket: tls.TLSSocket | null = null;
  state: 'joining' | 'live' | 'dead' | 'done' = 'joining';
  private ackWaiters: (() => void)[] = [];

  constructor(readonly index: number) {}

  get inflightBytes(): number {
    return this.inflight.reduce((n, s) => n + s.chunk.length, 0);
  }

  /** Everything this stream holds that the server may not have stored. */
  unacknowledged(): Chunk[] {
    return [...this.inflight.map((s) => s.chunk), ...this.queue];
  }

  acked(): void {
    const w = this.ackWaiters;
    this.ackWaiters = [];
    for (const resolve of w) resolve();
  }

  nextAck(): Promise<void> {
    return new Promise((resolve) => this.ackWaiters.push(resolve));
  }
}

export async function runParallel(args: ParallelArgs): Promise<number> {
  const { entry, ctx, blog, stats, sessionId, ring } = args;
  const { config } = ctx;
  const max = entry.parallels;
  const chunkSize = entry.resume.chunk_size;
  const dispatcher = new Dispatcher(ring, chunkSize);
  // Each stream may hold a fair share of the ring unacknowledged (at least two chunks).
  const window = Math.max(2 * chunkSize, Math.floor(entry.resume.buffer_size / (2 * max)));
  const streams: DataStream[] = [];
  const runners: Promise<void>[] = [];
  /** Set when the session cannot go on: every stream dead, or a stream learned it must restart. */
  let fatal: Error | null = null;
  let rejectFatal!: (err: Error) => void;
  const allDead = new Promise<never>((_, reject) => (rejectFatal = reject));
  allDead.catch(() => undefined);
  const settleAll = (err: Error): void => {
    fatal ??= err;
    rejectFatal(err);
  };
  // A failure of the producer must stop every stream waiting for chunks.
  args.pipeline.catch((err: unknown) => dispatcher.fail(err instanceof Error ? err : new Error(String(err))));

  const progress = (): void =>
    ctx.onProgress?.({ sent: stats.bytesSent, acked: ring.tail, produced: ring.head, done: false, retries: stats.reconnects });

  const start = (index: number): void => {
    const st = new DataStream(index);
    streams.push(st);
    const p = runStream(st).then(
      () => {
        if (st.state !== 'dead') return;
        const live = streams.filter((s) => s.state !== 'dead');
        if (live.length === 0) {
          settleAll(
            new NbackupError(
              'network',
              `all ${streams.length} parallel stream${streams.length === 1 ? ' is' : 's are'} dead (each failed ${REJOIN_ATTEMPTS} re-joins); the backup cannot continue`,
            ),
          );
        }
      },
      (err: unknown) => settleAll(err instanceof Error ? err : new Error(String(err))),
    );
    runners.push(p);
  };

  /** One data stream for the whole backup: join, send, re-join after breaks, or die. */
  const runStream = async (st: DataStream): Promise<void> => {
    const log = blog.child({ session: sessionId, stream: st.index });
    let failedJoins = 0;
    let broken = false;
    for (;;) {
      if (broken) {
        if (failedJoins >= REJOIN_ATTEMPTS) {
          st.state = 'dead';
          const orphans = st.unacknowledged();
          st.queue.length = 0;
          st.inflight.length = 0;
          log.error({ attempts: failedJoins, handedOver: orphans.length }, 'stream is dead; its unacknowledged chunks go to the live streams');
          for (const c of orphans) stats.bytesResent += c.length;
          dispatcher.orphan(orphans);
          return;
        }
        const delay = backoff(config.retry, failedJoins + 1);
        await sleep(delay, ctx.signal);
        stats.reconnects++;
        progress();
      }
      let socket: tls.TLSSocket | null = null;
      let frames: FrameSocket;
      try {
        socket = await connectServer(config.server, ctx.material, config.retry.connect_timeout);
        frames = new FrameSocket(socket);
        socket.write(encodeParallelJoin({ sessionId, streamIndex: st.index }));
        const pa = await frames.read(decodeParallelAck, config.retry.connect_timeout, 'join answer');
        if (pa.status === ParallelStatus.NOT_FOUND) throw new RestartSession(`server no longer has session ${sessionId} (stream ${st.index} join: NOT_FOUND)`);
        if (pa.status !== ParallelStatus.OK) {
          throw new NbackupError('rejected', `server refused stream ${st.index}: ${statusName(ParallelStatus, pa.status)}`);
        }
        reconcile(st, pa.lastOffset);
      } catch (err) {
        socket?.destroy();
        if (err instanceof RestartSession || !isRetryable(err)) throw err;
        failedJoins++;
        broken = true;
        log.warn({ err: errorMessage(err), attempt: failedJoins }, 'stream re-join failed');
        continue;
      }
      st.joins++;
      if (st.joins > 1) log.info({ lastOffset: st.offset, resending: st.queue.length }, 'stream re-joined');
      failedJoins = 0;
      st.socket = socket;
      st.state = 'live';
      try {
        await pump(st, socket, frames);
        st.state = 'done';
        return;
      } catch (err) {
        socket.destroy();
        st.socket = null;
        st.state = 'joining';
        if (!isRetryable(err)) throw err;
        broken = true;
        log.warn({ err: errorMessage(err), offset: st.offset, unacknowledged: st.inflight.length }, 'stream connection lost; re-joining');
      }
    }
  };

  /** After a (re-)join: keep what the server has, queue the rest again, continue at its offset. */
  const reconcile = (st: DataStream, lastOffset: number): void => {
    if (lastOffset > st.offset) {
      throw new NbackupError('protocol', `server has ${lastOffset} bytes of stream ${st.index}, but only ${st.offset} were sent`);
    }
    const resend: Chunk[] = [];
    while (st.inflight.length > 0 && st.inflight[st.inflight.length - 1].start >= lastOffset) {
      resend.unshift(st.inflight.pop()!.chunk);
    }
    const last = st.inflight[st.inflight.length - 1];
    if (last && last.end !== lastOffset) {
      throw new NbackupError('protocol', `server offset ${lastOffset} of stream ${st.index} is not a chunk boundary`);
    }
    for (const c of resend) stats.bytesResent += c.length;
    st.queue.unshift(...resend);
    st.offset = lastOffset;
  };

  /** Sends chunks on one connection and takes its ChunkSACKs until everything is acknowledged. */
  const pump = async (st: DataStream, socket: tls.TLSSocket, frames: FrameSocket): Promise<void> => {
    // Dead-link detection. A stream's chunks may rightly wait unacknowledged on the server for a
    // slower stream's chunk, so silence alone proves nothing. A connection is declared dead when it
    // holds the session's oldest unacknowledged chunk, and for read_timeout neither that stream
    // nor the session got an acknowledgement and no byte left its send buffer.
    let lastMove = Date.now();
    let lastFlushed = -1;
    let deadErr: NbackupError | null = null;
    const watchdog = setInterval(
      () => {
        const now = Date.now();
        const flushed = socket.bytesWritten - socket.writableLength;
        if (flushed !== lastFlushed || st.inflight.length === 0) {
          lastFlushed = flushed;
          lastMove = now;
        }
        const quiet = now - Math.max(lastMove, dispatcher.lastProgress);
        if (st.inflight.length > 0 && st.inflight[0].chunk.seq === dispatcher.lowest && quiet > config.retry.read_timeout) {
          deadErr = new NbackupError('timeout', `stream ${st.index}: no acknowledgement and no progress for ${Math.round(config.retry.read_timeout / 1000)}s`);
          socket.destroy(deadErr);
        }
      },
      Math.min(1000, Math.max(50, config.retry.read_timeout / 4)),
    );
    let sending = true;
    const acks = (async (): Promise<void> => {
      for (;;) {
        let sack;
        try {
          sack = await frames.read(decodeChunkSack, FOREVER, 'chunk acknowledgement');
        } catch (err) {
          // The server closes its side after our half-close, once everything is acknowledged.
          if (!sending && st.inflight.length === 0 && err instanceof NbackupError && err.kind === 'network') return;
          throw err;
        }
        if (sack.streamIndex !== st.index) throw new NbackupError('protocol', `ChunkSACK for stream ${sack.streamIndex} on stream ${st.index}`);
        if (sack.offset > st.offset) throw new NbackupError('protocol', `ChunkSACK offset ${sack.offset} beyond the ${st.offset} bytes sent`);
        while (st.inflight.length > 0 && st.inflight[0].end <= sack.offset) dispatcher.ack(st.inflight.shift()!.chunk);
        lastMove = Date.now();
        st.acked();
        progress();
      }
    })();
    const sender = (async (): Promise<void> => {
      for (;;) {
        // A full window waits for acknowledgements, except for a dead stream's chunks: they are the
        // oldest, and the chunks filling every window may be waiting on the server for them.
        let chunk: Chunk | null | undefined = st.queue.shift();
        while (!chunk && st.inflightBytes >= window) {
          chunk = dispatcher.takeOrphan();
          if (!chunk) await Promise.race([st.nextAck(), dispatcher.changed(), acks]);
        }
        chunk ??= await dispatcher.take(acks);
        if (socket.destroyed || chunk === undefined) {
          if (chunk) st.queue.unshift(chunk);
          throw deadErr ?? new NbackupError('network', `stream ${st.index} connection closed`);
        }
        if (chunk === null) break;
        // In flight before the first byte is written: a break now re-queues it, never loses it.
        const sent: Sent = { chunk, start: st.offset, end: st.offset + CHUNK_HEADER_SIZE + chunk.length };
        st.inflight.push(sent);
        st.offset = sent.end;
        socket.write(encodeChunkHeader({ globalSeq: chunk.seq, length: chunk.length }));
        for (let off = 0; off < chunk.length; ) {
          const view = ring.read(chunk.start + off, Math.min(SEND_SLICE, chunk.length - off));
          off += view.length;
          stats.bytesSent += view.length;
          const wait = writeWithBackpressure(socket, view);
          if (wait) await wait;
        }
        stats.highWater = Math.max(stats.highWater, chunk.start + chunk.length);
        progress();
      }
      // Everything acknowledged: this stream is finished.
      sending = false;
      socket.end();
    })();
    sender.catch(() => undefined);
    acks.catch(() => undefined);
    try {
      await Promise.all([sender, acks]);
    } catch (err) {
      socket.destroy();
      throw deadErr ?? err;
    } finally {
      clearInterval(watchdog);
    }
  };

  // Start streams: all of them, or one and let the autoscaler add more.
  const scaler = entry.auto_scaler.enabled && max > 1 ? new AutoScaler({ max }) : null;
  const initial = scaler ? 1 : max;
  blog.info({ session: sessionId, maxStreams: max, chunkSize, streams: initial, autoscaler: scaler !== null }, 'parallel session started');
  for (let i = 0; i < initial; i++) start(i);
  let lastAcked = 0;
  let lastTick = Date.now();
  const scaleTimer = scaler
    ? setInterval(() => {
        const now = Date.now();
        const bps = ((dispatcher.ackedBytes - lastAcked) * 1000) / Math.max(1, now - lastTick);
        lastAcked = dispatcher.ackedBytes;
        lastTick = now;
        if (dispatcher.complete || scaler.settled) return;
        const d = scaler.sample(bps);
        if (!d) return;
        const fig = {
          session: sessionId,
          streams: d.streams,
          beforeMBps: Number((d.beforeBps / 1048576).toFixed(1)),
          afterMBps: Number((d.afterBps / 1048576).toFixed(1)),
          gainPct: Number((d.gain * 100).toFixed(1)),
          reason: d.reason,
        };
        if (d.action === 'add') {
          blog.info(fig, 'autoscaler: adding a stream');
          start(streams.length);
        } else {
          blog.info(fig, 'autoscaler: keeping the current streams');
        }
      }, AUTOSCALE_WINDOW_MS)
    : null;

  let primary = args.primary;
  let primaryFrames = args.primaryFrames;
  try {
    for (let attempt = 0; ; ) {
      const finalAck = primaryFrames.read(decodeFinalAck, FOREVER, 'final answer');
      finalAck.catch(() => undefined);
      try {
        // Every chunk stored before the trailer goes out; meanwhile the primary only has to stay up.
        await Promise.race([waitComplete(dispatcher, ring), finalAck.then(unexpectedFinal), allDead]);
        await args.pipeline;
        const trailer = args.trailer();
        if (!trailer) throw new NbackupError('internal', 'pipeline ended without a trailer');
        primary.end(trailer);
        return (await Promise.race([finalAck, allDead])).status;
      } catch (err) {
        if (fatal || !isRetryable(err)) throw fatal ?? err;
        attempt++;
        if (attempt >= config.retry.max_attempts) throw new NbackupError('network', `primary connection lost ${attempt} times, giving up: ${errorMessage(err)}`);
        blog.warn({ session: sessionId, err: errorMessage(err), attempt }, 'primary connection lost; re-attaching');
        primary.destroy();
        await sleep(backoff(config.retry, attempt), ctx.signal);
        stats.reconnects++;
        primary = await connectWithRetry(ctx, blog, stats, { n: attempt });
        primaryFrames = new FrameSocket(primary);
        primary.write(encodeResume({ sessionId, agent: config.agent.name, storage: entry.storage }));
        const ra = await primaryFrames.read(decodeResumeAck, config.retry.connect_timeout, 'resume answer');
        if (ra.status !== ResumeStatus.OK) throw new RestartSession(`server no longer has session ${sessionId} (${statusName(ResumeStatus, ra.status)})`);
      }
    }
  } catch (err) {
    dispatcher.fail(err instanceof Error ? err : new Error(String(err)));
    throw err;
  } finally {
    if (scaleTimer) clearInterval(scaleTimer);
    if (primary !== args.primary) primary.destroy();
    for (const s of streams) s.socket?.destroy();
    await Promise.allSettled(runners);
    const perStream = streams.map((s) => ({ stream: s.index, joins: s.joins, state: s.state }));
    blog.info({ session: sessionId, streams: perStream, resent: stats.bytesResent }, 'parallel streams finished');
  }
}

function unexpectedFinal(f: { status: FinalStatus }): never {
  throw new NbackupError('server', `server ended the session early: ${statusName(FinalStatus, f.status)}`);
}

async function waitComplete(dispatcher: Dispatcher, ring: RingBuffer): Promise<void> {
  while (!dispatcher.complete) {
    const changed = dispatcher.changed();
    await (ring.ended ? changed : Promise.race([changed, ring.waitForData(ring.head)]));
  }
}

import { AckStatus, FinalStatus, ResumeStatus, TRAILER_SIZE, statusName } from '../../protocol/constants.js';
import {
  decodeAck,
  decodeResumeAck,
  decodeServerDataMessage,
  encodeHandshake,
  encodeResume,
  encodeParallelInit,
  encodeSingleMode,
  encodeTrailer,
} from '../../protocol/frames.js';
import type tls from 'node:tls';
import type { AgentConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket, writeWithBackpressure } from '../net/frame-socket.js';
import type { TlsMaterial } from '../tls/material.js';
import {
  RestartSession,
  SEND_SLICE,
  backoff,
  connectWithRetry,
  isRetryable,
  sleep,
  type BackupContext,
  type RunStats,
} from './session-common.js';
import { selectGzipCodec } from './gzip-codec.js';
import { runPipeline, type PipelineResult } from './pipeline.js';
import { RingBuffer } from './ring-buffer.js';
import { runParallel } from './parallel-job.js';
import { checkSources } from './scanner.js';

/**
 * One backup entry, start to finish, over a single stream:
 * handshake → mode 0x00 → (pipeline → ring buffer → socket, SACKs free the ring) → trailer →
 * half-close → Final ACK. Succeeds only when the server says the file is committed.
 */
export type BackupEntry = AgentConfig['backups'][number];

export interface BackupOutcome {
  backup: string;
  sessionId: string;
  /** Compressed bytes committed on the server. */
  bytes: number;
  sha256: string;
  files: number;
  warnings: number;
  durationMs: number;
  reconnects: number;
  /** Body bytes put on the wire over all connections, resends included. */
  bytesSent: number;
}

/** A new session (from scratch) is tried at most this many times per run. */
const MAX_SESSIONS = 3;

export async function runBackup(entry: BackupEntry, ctx: BackupContext): Promise<BackupOutcome> {
  const sources = entry.sources.map((s) => s.path);
  checkSources(sources);
  const stats: RunStats = { started: Date.now(), reconnects: 0, bytesSent: 0, bytesResent: 0, highWater: 0 };
  const blog = ctx.log.child({ backup: entry.name, storage: entry.storage });
  for (let attempt = 1; ; attempt++) {
    try {
      return await runSession(entry, sources, ctx, blog, stats);
    } catch (err) {
      if (!(err instanceof RestartSession) || attempt >= MAX_SESSIONS) {
        if (err instanceof RestartSession) throw new NbackupError('network', `gave up after ${attempt} sessions: ${err.message}`);
        throw err instanceof NbackupError ? err : new NbackupError('internal', errorMessage(err), { cause: err });
      }
      blog.warn({ reason: err.message, attempt: attempt + 1 }, 'starting a new session from the beginning');
    }
  }
}

async function runSession(entry: BackupEntry, sources: string[], ctx: BackupContext, blog: Logger, stats: RunStats): Promise<BackupOutcome> {
  const { config } = ctx;
  const failures = { n: 0 };
  let socket = await connectWithRetry(ctx, blog, stats, failures);
  let frames = new FrameSocket(socket);
  socket.write(encodeHandshake({ agent: config.agent.name, storage: entry.storage, backup: entry.name }));
  let ack;
  try {
    ack = await frames.read(decodeAck, config.retry.connect_timeout, 'handshake answer');
  } catch (err) {
    socket.destroy();
    throw err;
  }
  if (ack.status !== AckStatus.GO) {
    socket.destroy();
    throw new NbackupError('rejected', `server refused the backup: ${statusName(AckStatus, ack.status)}${ack.message ? ` (${ack.message})` : ''}`);
  }
  const sessionId = ack.sessionId;
  const codec = selectGzipCodec((why) => blog.warn(why));
  blog.info({ session: sessionId, sources, exclude: entry.exclude, gzip: codec.name, level: entry.compression.level }, 'backup started');
  const parallel = entry.parallels > 0;
  socket.write(parallel ? encodeParallelInit({ maxStreams: entry.parallels, chunkSize: entry.resume.chunk_size }) : encodeSingleMode());

  const ring = new RingBuffer(entry.resume.buffer_size);
  let result: PipelineResult | null = null;
  let trailer: Buffer | null = null;
  const pipeline = runPipeline({
    sources,
    exclude: entry.exclude,
    level: entry.compression.level,
    codec,
    deliver: (out) => ring.write(out),
    onWarning: (w) => blog.warn({ path: w.path }, w.message),
    signal: ctx.signal,
  }).then(
    (r) => {
      result = r;
      trailer = encodeTrailer({ sha256: r.sha256, size: r.size });
      ring.end();
    },
    (err: unknown) => {
      ring.fail(err instanceof Error ? err : new Error(String(err)));
      throw err;
    },
  );
  pipeline.catch(() => undefined);

  const link: Link = { ring, trailer: () => trailer, stats, progress: ctx.onProgress, readTimeout: config.retry.read_timeout, pipeline };
  /** Single stream: transmit, and on a broken connection resume from the server's offset. */
  const single = async (): Promise<number> => {
    let from = 0;
    for (;;) {
      try {
        return await transmit(link, socket, frames, from);
      } catch (err) {
        socket.destroy();
        if (!isRetryable(err)) throw err;
        failures.n++;
        if (failures.n >= config.retry.max_attempts) {
          throw new NbackupError('network', `connection lost ${failures.n} times, giving up: ${errorMessage(err)}`);
        }
        const delay = backoff(config.retry, failures.n);
        blog.warn({ session: sessionId, err: errorMessage(err), attempt: failures.n, delayMs: delay, acked: ring.tail }, 'connection lost; resuming');
        await sleep(delay, ctx.signal);
        stats.reconnects++;
        socket = await connectWithRetry(ctx, blog, stats, failures);
        frames = new FrameSocket(socket);
        socket.write(encodeResume({ sessionId, agent: config.agent.name, storage: entry.storage }));
        const ra = await frames.read(decodeResumeAck, config.retry.connect_timeout, 'resume answer').catch((e: unknown) => {
          socket.destroy();
          throw e;
        });
        if (ra.status !== ResumeStatus.OK) {
          socket.destroy();
          throw new RestartSession(`server no longer has session ${sessionId} (${statusName(ResumeStatus, ra.status)})`);
        }
        const limit = ring.head + (ring.ended ? TRAILER_SIZE : 0);
        if (ra.lastOffset > limit) {
          socket.destroy();
          throw new NbackupError('protocol', `server resumed at offset ${ra.lastOffset}, beyond the ${limit} bytes produced`);
        }
        const resumeAt = Math.min(ra.lastOffset, ring.head);
        if (!ring.holds(resumeAt)) {
          socket.destroy();
          throw new RestartSession(`resume offset ${ra.lastOffset} has already left the ring buffer (it holds ${ring.tail}..${ring.head}); resume.buffer_size is too small for this link`);
        }
        ring.release(resumeAt);
        const resend = Math.max(0, stats.highWater - ra.lastOffset);
        stats.bytesResent += resend;
        blog.info({ session: sessionId, lastOffset: ra.lastOffset, resending: resend, reconnects: stats.reconnects }, 'session resumed');
        from = ra.lastOffset;
      }
    }
  };

  try {
    const status = parallel
      ? await runParallel({ entry, ctx, blog, stats, sessionId, primary: socket, primaryFrames: frames, ring, pipeline, trailer: () => trailer })
      : await single();
    await pipeline;
    const r = result as PipelineResult | null;
    if (!r) throw new NbackupError('internal', 'pipeline finished without a result');
    if (status !== FinalStatus.OK) {
      throw new NbackupError(
        status === FinalStatus.CHECKSUM_MISMATCH ? 'checksum' : 'server',
        `server did not commit the backup: ${statusName(FinalStatus, status)}`,
      );
    }
    ctx.onProgress?.({ sent: stats.bytesSent, acked: ring.tail, produced: ring.head, done: true, retries: stats.reconnects });
    const outcome: BackupOutcome = {
      backup: entry.name,
      sessionId,
      bytes: r.size,
      sha256: r.sha256.toString('hex'),
      files: r.pack.files,
      warnings: r.pack.warnings,
      durationMs: Date.now() - stats.started,
      reconnects: stats.reconnects,
      bytesSent: stats.bytesSent,
    };
    blog.info(
      {
        session: sessionId,
        bytes: outcome.bytes,
        tarBytes: r.pack.tarBytes,
        files: outcome.files,
        warnings: outcome.warnings,
        sha256: outcome.sha256,
        reconnects: stats.reconnects,
        bytesSent: stats.bytesSent,
        bytesResent: stats.bytesResent,
        durationS: outcome.durationMs / 1000,
        mbPerS: Number((r.pack.tarBytes / 1048576 / Math.max(outcome.durationMs / 1000, 0.001)).toFixed(1)),
      },
      'backup committed',
    );
    return outcome;
  } catch (err) {
    // Stop the producer, and wait for it, before the job returns or starts over.
    ring.fail(err instanceof Error ? err : new Error(String(err)));
    await pipeline.catch(() => undefined);
    throw err;
  } finally {
    socket.destroy();
  }
}

interface Link {
  ring: RingBuffer;
  trailer: () => Buffer | null;
  stats: RunStats;
  progress?: BackupContext['onProgress'];
  readTimeout: number;
  pipeline: Promise<void>;
}

/**
 * One connection's worth of a session: send from `from` (data, then the trailer, then a
 * half-close) while SACKs free the ring, until the Final ACK. A connection that makes no progress
 * for `readTimeout` while bytes are unacknowledged is treated as dead (a half-open link).
 */
async function transmit(link: Link, socket: tls.TLSSocket, frames: FrameSocket, from: number): Promise<number> {
  const { ring, stats } = link;
  let sent = from;
  let lastAck = Date.now();
  let awaitingFinal = false;
  const progress = (): void => link.progress?.({ sent: stats.bytesSent, acked: ring.tail, produced: ring.head, done: false, retries: stats.reconnects });
  let deadErr: NbackupError | null = null;
  const watchdog = setInterval(() => {
    const outstanding = sent > ring.tail || awaitingFinal;
    if (!outstanding) lastAck = Date.now();
    else if (Date.now() - lastAck > link.readTimeout) {
      deadErr = new NbackupError('timeout', `no acknowledgement from the server for ${Math.round(link.readTimeout / 1000)}s`);
      socket.destroy(deadErr);
    }
  }, Math.min(1000, Math.max(50, link.readTimeout / 4)));
  const finalAck = (async (): Promise<number> => {
    for (;;) {
      const msg = await frames.read(decodeServerDataMessage, 24 * 3600 * 1000, 'acknowledgement from the server');
      if (msg.type === 'final') return msg.status;
      // SACK offsets count trailer bytes too, which never enter the ring.
      if (msg.offset > ring.head + TRAILER_SIZE || (msg.offset > ring.head && !ring.ended)) {
        throw new NbackupError('protocol', `server acknowledged offset ${msg.offset}, beyond the ${ring.head} bytes produced`);
      }
      ring.release(Math.min(msg.offset, ring.head));
      lastAck = Date.now();
      progress();
    }
  })();
  const sender = (async (): Promise<void> => {
    for (;;) {
      await ring.waitForData(sent);
      if (sent >= ring.head && ring.ended) break;
      const view = ring.read(sent, SEND_SLICE);
      sent += view.length;
      stats.bytesSent += view.length;
      if (sent > stats.highWater) stats.highWater = sent;
      const wait = writeWithBackpressure(socket, view);
      if (wait) await wait;
      progress();
    }
    await link.pipeline;
    const trailer = link.trailer();
    if (!trailer) throw new NbackupError('internal', 'pipeline ended without a trailer');
    const part = trailer.subarray(Math.max(0, sent - ring.head));
    stats.bytesSent += part.length;
    stats.highWater = Math.max(stats.highWater, ring.head + TRAILER_SIZE);
    awaitingFinal = true;
    socket.end(part);
  })();
  sender.catch(() => undefined);
  finalAck.catch(() => undefined);
  try {
    await Promise.race([sender, finalAck]);
    return await finalAck;
  } catch (err) {
    throw deadErr ?? err;
  } finally {
    clearInterval(watchdog);
  }
}

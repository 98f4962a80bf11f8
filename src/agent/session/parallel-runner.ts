import { FinalStatus, PROTOCOL_VERSION } from '../../../protocol/constants.js';
import { finalAckDecoder, type FinalAck } from '../../../protocol/frames.js';
import { NbackupError, asNbackupError, errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import type { RingBuffer } from '../pipeline/ring-buffer.js';
import { AutoScaler } from './autoscaler.js';
import { ChunkDispatcher } from './chunk-dispatcher.js';
import { NO_DEADLINE_MS, backoffSignal, reportProgress, type BackupContext, type RunStats } from './context.js';
import { DataStream, REJOIN_ATTEMPTS, type StreamEnv } from './data-stream.js';
import { committedAnswer, failureOf } from './final-answer.js';
import type { PrimaryConnection } from './primary.js';
import { RestartSession, RetryBudget, isRetryable, sleep } from './retry.js';
import { LinkWatchdog } from './link-watchdog.js';

/**
 * A parallel session (protocol §3): up to `parallels` data streams share the chunks of the ring
 * (ChunkDispatcher); the autoscaler may start with one and add streams while throughput grows.
 * The primary connection carries only the trailer, once every chunk is acknowledged, and the Final
 * ACK; if it breaks it re-attaches with RSME. The backup fails only when every stream is dead.
 */
export interface ParallelSend {
  ctx: BackupContext;
  log: Logger;
  stats: RunStats;
  primary: PrimaryConnection;
  ring: RingBuffer;
  maxStreams: number;
  chunkSize: number;
  bufferSize: number;
  autoScale: boolean;
  pipeline: Promise<void>;
  trailer: () => Buffer | null;
}

const AUTOSCALE_WINDOW_MS = 1000;
const FINAL_ACK = finalAckDecoder(PROTOCOL_VERSION);

/** Resolves with the Final ACK. */
export async function runParallel(p: ParallelSend): Promise<FinalAck> {
  const { ctx, log, stats, primary, ring, maxStreams } = p;
  const sessionId = primary.sessionId;
  const dispatcher = new ChunkDispatcher(ring, p.chunkSize);
  // A failure of the producer must stop every stream waiting for chunks.
  p.pipeline.catch((err: unknown) => dispatcher.fail(asNbackupError(err)));
  const env: StreamEnv = {
    ctx,
    log,
    stats,
    sessionId,
    ring,
    dispatcher,
    // Each stream may hold a fair share of the ring unacknowledged (at least two chunks).
    window: Math.max(2 * p.chunkSize, Math.floor(p.bufferSize / (2 * maxStreams))),
    progress: () => {
      stats.streams = streams.filter((s) => s.state === 'live').length;
      reportProgress(ctx, stats, ring);
    },
  };
  const streams: DataStream[] = [];
  const runners: Promise<void>[] = [];
  /** Rejects when the session cannot go on: every stream dead, or a stream learned it must restart. */
  let fatal: Error | null = null;
  let rejectFatal!: (err: Error) => void;
  const doomed = new Promise<never>((_, reject) => (rejectFatal = reject));
  doomed.catch(() => undefined);
  const giveUp = (err: Error): void => {
    fatal ??= err;
    rejectFatal(err);
  };
  const start = (index: number): void => {
    const stream = new DataStream(index, env);
    streams.push(stream);
    const run = stream.run().then(
      () => {
        if (stream.state === 'dead' && streams.every((s) => s.state === 'dead')) {
          const n = streams.length;
          giveUp(new NbackupError('network', `all ${n} parallel stream${n === 1 ? ' is' : 's are'} dead (each failed ${REJOIN_ATTEMPTS} re-joins); the backup cannot continue`));
        }
      },
      // A stream that finds its session gone (PJIN NOT_FOUND) asks for a new session: that
      // request must reach backup-job as it is, not as an internal error.
      (err: unknown) => giveUp(err instanceof RestartSession ? err : asNbackupError(err)),
    );
    runners.push(run);
  };

  const scaler = p.autoScale && maxStreams > 1 ? new AutoScaler({ max: maxStreams }) : null;
  const initial = scaler ? 1 : maxStreams;
  log.info({ session: sessionId, maxStreams, chunkSize: p.chunkSize, streams: initial, autoscaler: scaler !== null }, 'parallel session started');
  for (let i = 0; i < initial; i++) start(i);
  const scaleTimer = scaler ? startAutoscaling(scaler, dispatcher, log, sessionId, () => start(streams.length)) : null;
  // CROT on the control channel drains and re-joins one stream (DataStream.rotate).
  const rotate = (index: number): Promise<void> => streams.find((s) => s.index === index)?.rotate() ?? Promise.resolve();
  if (ctx.control) ctx.control.onRotate = rotate;

  try {
    return await finishOnPrimary(p, dispatcher, doomed, () => fatal);
  } catch (err) {
    dispatcher.fail(asNbackupError(err));
    throw err;
  } finally {
    if (scaleTimer) clearInterval(scaleTimer);
    if (ctx.control?.onRotate === rotate) ctx.control.onRotate = null;
    for (const s of streams) s.socket?.destroy();
    await Promise.allSettled(runners);
    const perStream = streams.map((s) => ({ stream: s.index, joins: s.joins, rotations: s.rotations, state: s.state }));
    log.info({ session: sessionId, streams: perStream, resent: stats.bytesResent }, 'parallel streams finished');
  }
}

/**
 * Waits until every chunk is acknowledged (meanwhile the primary only has to stay up), sends the
 * trailer and waits for the Final ACK, re-attaching the primary when it breaks.
 */
async function finishOnPrimary(p: ParallelSend, dispatcher: ChunkDispatcher, doomed: Promise<never>, fatal: () => Error | null): Promise<FinalAck> {
  const { ctx, log, primary } = p;
  const budget = new RetryBudget(ctx.config.retry);
  for (;;) {
    const finalAck = primary.frames.read(FINAL_ACK, NO_DEADLINE_MS, 'final answer');
    finalAck.catch(() => undefined);
    try {
      await Promise.race([dispatcher.allAcknowledged(), finalAck.then(unexpectedFinal), doomed]);
      await p.pipeline;
      const trailer = p.trailer();
      if (!trailer) throw new NbackupError('internal', 'pipeline ended without a trailer');
      primary.socket.end(trailer);
      // A server silent after the trailer for read_timeout: re-attach, and hear the outcome there
      // (COMMITTED once its commit is done), as a single stream does.
      const watchdog = new LinkWatchdog(primary.socket, {
        readTimeoutMs: ctx.config.retry.read_timeout,
        owed: () => true,
        message: `no Final ACK from the server for ${Math.round(ctx.config.retry.read_timeout / 1000)}s after the trailer`,
      });
      try {
        return await Promise.race([finalAck, doomed]);
      } catch (err) {
        throw watchdog.error ?? err;
      } finally {
        watchdog.stop();
      }
    } catch (err) {
      const why = fatal();
      if (why || !isRetryable(err)) throw why ?? err;
      const delay = budget.fail();
      if (delay === null) throw new NbackupError('network', `primary connection lost ${budget.failures} times, giving up: ${errorMessage(err)}`);
      log.warn({ session: primary.sessionId, err: errorMessage(err), attempt: budget.failures }, 'primary connection lost; re-attaching');
      primary.destroy();
      await sleep(delay, backoffSignal(ctx));
      const found = await primary.reattach(budget);
      if ('committed' in found) {
        log.info({ session: primary.sessionId, bytes: found.committed.size }, 'session was already committed (its Final ACK was lost)');
        return committedAnswer(p.trailer(), found.committed);
      }
    }
  }
}

/** A Final ACK before the trailer: the server ended the session (a full disk, say). */
function unexpectedFinal(f: FinalAck): never {
  throw failureOf(f) ?? new NbackupError('protocol', `the server answered ${FinalStatus.OK} (committed) before the trailer was sent`);
}

/** Samples acknowledged throughput once a window and lets the autoscaler add streams. */
function startAutoscaling(scaler: AutoScaler, dispatcher: ChunkDispatcher, log: Logger, sessionId: string, addStream: () => void): NodeJS.Timeout {
  let lastAcked = 0;
  let lastTick = performance.now();
  return setInterval(() => {
    const now = performance.now();
    const bps = ((dispatcher.ackedBytes - lastAcked) * 1000) / Math.max(1, now - lastTick);
    lastAcked = dispatcher.ackedBytes;
    lastTick = now;
    if (dispatcher.complete || scaler.settled) return;
    const d = scaler.sample(bps);
    if (!d) return;
    const figures = {
      session: sessionId,
      streams: d.streams,
      beforeMBps: Number((d.beforeBps / 1048576).toFixed(1)),
      afterMBps: Number((d.afterBps / 1048576).toFixed(1)),
      gainPct: Number((d.gain * 100).toFixed(1)),
      reason: d.reason,
    };
    if (d.action === 'add') {
      log.info(figures, 'autoscaler: adding a stream');
      addStream();
    } else {
      log.info(figures, 'autoscaler: keeping the current streams');
    }
  }, AUTOSCALE_WINDOW_MS);
}

import { encodeTrailer } from '../../protocol/frames.js';
import type { BackupConfig } from '../config/index.js';
import type { Logger } from '../log/logger.js';
import { codecFor } from './pipeline/codecs.js';
import { runPipeline, type PipelineResult } from './pipeline/pipeline.js';
import { RingBuffer } from './pipeline/ring-buffer.js';
import { checkSources } from './pipeline/scanner.js';
import { newRunStats, reportProgress, type BackupContext, type RunStats } from './session/context.js';
import { runParallel } from './session/parallel-runner.js';
import { failureOf } from './session/final-answer.js';
import { openAdmitted } from './session/admission-wait.js';
import { RestartSession, RetryBudget } from './session/retry.js';
import { sendSingle } from './session/single-sender.js';
import { giveUpSession } from './session/give-up.js';
import { runLimit } from './run-limit.js';
import { Pacer } from './session/pacer.js';
import { uploadIndex } from './session/index-upload.js';
import { NbackupError, asNbackupError, errorMessage } from '../errors.js';

/**
 * One backup entry, start to finish: open a session on the primary connection, run the pipeline
 * (scanner → tar → gzip → SHA-256) into the ring buffer, and send the ring over one stream or
 * several; succeed only when the server says the file is committed. A session the server lost
 * (or whose resume point left the ring) starts over, at most MAX_SESSIONS times per run.
 */
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

const MAX_SESSIONS = 3;

export async function runBackup(entry: BackupConfig, ctx: BackupContext): Promise<BackupOutcome> {
  const sources = entry.sources.map((s) => s.path);
  checkSources(sources);
  const stats = newRunStats();
  const log = ctx.log.child({ backup: entry.name, storage: entry.storage });
  const pacer = entry.bandwidth_limit ? new Pacer(entry.bandwidth_limit) : undefined;
  for (let attempt = 1; ; attempt++) {
    // The run limit holds for each attempt on its own; a stopping daemon ends any of them.
    const limit = runLimit(entry.name, entry.run_limit, ctx.signal);
    log.debug({ attempt, runLimitMs: entry.run_limit, bandwidthLimit: entry.bandwidth_limit ?? null, parallels: entry.parallels }, 'attempt started');
    try {
      return await runSession(entry, sources, { ...ctx, signal: limit.signal, pacer }, log, stats);
    } catch (err) {
      if (!(err instanceof RestartSession)) throw asNbackupError(err);
      if (attempt >= MAX_SESSIONS) throw new NbackupError('network', `gave up after ${attempt} sessions: ${err.message}`);
      log.warn({ reason: err.message, attempt: attempt + 1 }, 'starting a new session from the beginning');
    } finally {
      limit.clear();
    }
  }
}

async function runSession(entry: BackupConfig, sources: string[], ctx: BackupContext, log: Logger, stats: RunStats): Promise<BackupOutcome> {
  // Before any connection: a format this agent cannot write fails the entry with nothing opened.
  const codec = codecFor(entry.compression.format, entry.compression.level);
  const budget = new RetryBudget(ctx.config.retry);
  const primary = await openAdmitted(ctx, entry, log, stats, budget);
  const sessionId = primary.sessionId;
  log.info(
    { session: sessionId, sources, exclude: entry.exclude, format: codec.format, engine: codec.engine, level: entry.compression.level },
    'backup started',
  );

  const ring = new RingBuffer(entry.resume.buffer_size);
  let result: PipelineResult | null = null;
  let trailer: Buffer | null = null;
  const pipeline = runPipeline({
    sources,
    exclude: entry.exclude,
    codec,
    deliver: (out) => ring.write(out),
    onWarning: (w) => log.warn({ path: w.path }, w.message),
    onNotice: (n) => log.info({ path: n.path }, n.message),
    signal: ctx.signal,
    onStart: (pack) => (stats.pack = pack),
  }).then(
    (r) => {
      result = r;
      trailer = encodeTrailer({ sha256: r.sha256, size: r.size });
      ring.end();
    },
    (err: unknown) => {
      ring.fail(asNbackupError(err));
      throw err;
    },
  );
  pipeline.catch(() => undefined);
  // Aborted (run limit, stopping daemon): stop producing and close every connection now.
  const signal = ctx.signal;
  const onAbort = (): void => {
    ring.fail(asNbackupError(signal!.reason));
    primary.destroy();
  };
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });

  try {
    const common = { ctx, log, stats, primary, ring, pipeline, trailer: () => trailer };
    const final =
      entry.parallels > 0
        ? await runParallel({
            ...common,
            maxStreams: entry.parallels,
            chunkSize: entry.resume.chunk_size,
            bufferSize: entry.resume.buffer_size,
            autoScale: entry.auto_scaler.enabled,
          })
        : await sendSingle({ ...common, budget });
    // A refusal may come before the pipeline is done (a full disk): the catch below stops it.
    const failure = failureOf(final);
    if (failure) throw failure;
    await pipeline;
    const r = result as PipelineResult | null;
    if (!r) throw new NbackupError('internal', 'pipeline finished without a result');
    reportProgress(ctx, stats, ring, true);
    const outcome = committed(entry, sessionId, r, stats, log);
    await storeIndex(ctx, sessionId, r, log);
    return outcome;
  } catch (err) {
    // Stop the producer, and wait for it, before the job returns or starts over.
    ring.fail(asNbackupError(err));
    await pipeline.catch(() => undefined);
    // Aborted, or a back-off cut short by a stopping daemon: the server may drop the session now.
    const abortReason = signal?.aborted ? signal.reason : ctx.stopping?.aborted && err === ctx.stopping.reason ? err : undefined;
    if (abortReason !== undefined) {
      // Whatever broke on the way down, the abort is why.
      const reason = asNbackupError(abortReason);
      primary.destroy();
      await giveUpSession(ctx, log, sessionId, reason.message);
      throw reason;
    }
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    primary.destroy();
  }
}

/** Sends the archive's index after its commit; a failure is a warning (the backup is good either way). */
async function storeIndex(ctx: BackupContext, sessionId: string, r: PipelineResult, log: Logger): Promise<void> {
  if ('dropped' in r.index) {
    log.warn({ session: sessionId, reason: r.index.dropped }, 'no index for this archive: restoring a few files from it reads all of it');
    return;
  }
  try {
    const bytes = await uploadIndex(ctx, sessionId, r.index.parts);
    log.info({ session: sessionId, bytes, members: r.pack.entries }, 'index stored');
  } catch (err) {
    log.warn({ session: sessionId, err: errorMessage(err) }, 'index not stored: restoring a few files from this archive reads all of it');
  }
}

function committed(entry: BackupConfig, sessionId: string, r: PipelineResult, stats: RunStats, log: Logger): BackupOutcome {
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
  log.info(
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
}

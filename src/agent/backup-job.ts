import { AckStatus, FinalStatus, TRAILER_SIZE, statusName } from '../../protocol/constants.js';
import {
  decodeAck,
  decodeServerDataMessage,
  encodeHandshake,
  encodeSingleMode,
  encodeTrailer,
} from '../../protocol/frames.js';
import type { AgentConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket, writeWithBackpressure } from '../net/frame-socket.js';
import type { TlsMaterial } from '../tls/material.js';
import { connectServer } from './connection.js';
import { runPipeline, type PipelineResult } from './pipeline.js';
import { RingBuffer } from './ring-buffer.js';
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
}

export interface BackupContext {
  config: AgentConfig;
  material: TlsMaterial;
  log: Logger;
  onProgress?: (p: { sent: number; acked: number; produced: number; done: boolean }) => void;
  signal?: AbortSignal;
}

/** Largest piece handed to one socket.write: big enough to amortise, small enough to interleave. */
const SEND_SLICE = 256 * 1024;

export async function runBackup(entry: BackupEntry, ctx: BackupContext): Promise<BackupOutcome> {
  const started = Date.now();
  const { config, log } = ctx;
  const sources = entry.sources.map((s) => s.path);
  checkSources(sources);
  const blog = log.child({ backup: entry.name, storage: entry.storage });

  const socket = await connectServer(config.server, ctx.material, config.retry.connect_timeout);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeHandshake({ agent: config.agent.name, storage: entry.storage, backup: entry.name }));
    const ack = await frames.read(decodeAck, config.retry.connect_timeout, 'handshake answer');
    if (ack.status !== AckStatus.GO) {
      throw new NbackupError('rejected', `server refused the backup: ${statusName(AckStatus, ack.status)}${ack.message ? ` (${ack.message})` : ''}`);
    }
    const sessionId = ack.sessionId;
    blog.info({ session: sessionId, sources, exclude: entry.exclude }, 'backup started');
    socket.write(encodeSingleMode());

    const ring = new RingBuffer(entry.resume.buffer_size);
    let sent = 0;
    let produced: PipelineResult | null = null;
    const progress = (done = false): void => ctx.onProgress?.({ sent, acked: ring.tail, produced: ring.head, done });

    // Server → agent: SACKs free the ring; the Final ACK ends the session.
    const finalAck = new Promise<number>((resolve, reject) => {
      const pump = async (): Promise<void> => {
        for (;;) {
          const msg = await frames.read(decodeServerDataMessage, config.retry.read_timeout, 'acknowledgement from the server');
          if (msg.type === 'sack') {
            // SACK offsets count trailer bytes too, which never enter the ring.
            if (msg.offset > ring.head + TRAILER_SIZE || (msg.offset > ring.head && !ring.ended)) {
              throw new NbackupError('protocol', `server acknowledged offset ${msg.offset}, beyond the ${ring.head} bytes sent`);
            }
            ring.release(Math.min(msg.offset, ring.head));
            progress();
          } else {
            resolve(msg.status);
            return;
          }
        }
      };
      pump().catch(reject);
    });
    finalAck.catch(() => undefined);

    const pipeline = runPipeline({
      sources,
      exclude: entry.exclude,
      level: entry.compression.level,
      deliver: (out) => ring.write(out),
      onWarning: (w) => blog.warn({ path: w.path }, w.message),
      signal: ctx.signal,
    }).then(
      (r) => {
        produced = r;
        ring.end();
        return r;
      },
      (err: unknown) => {
        ring.fail(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
    pipeline.catch(() => undefined);

    // Agent → server: everything in the ring, in order, then the trailer and a half-close.
    const sender = (async () => {
      for (;;) {
        await ring.waitForData(sent);
        if (sent === ring.head && ring.ended) break;
        const view = ring.read(sent, SEND_SLICE);
        sent += view.length;
        const wait = writeWithBackpressure(socket, view);
        if (wait) await wait;
        progress();
      }
      const result = await pipeline;
      socket.end(encodeTrailer({ sha256: result.sha256, size: result.size }));
    })();
    sender.catch(() => undefined);

    // Whichever fails first fails the backup; a lost connection also stops the producer.
    await Promise.race([sender, finalAck.then(() => undefined)]).catch((err: unknown) => {
      ring.fail(err instanceof Error ? err : new Error(String(err)));
      throw err;
    });
    const status = await finalAck;
    await pipeline;
    progress(true);
    const result = produced as PipelineResult | null;
    if (!result) throw new NbackupError('internal', 'pipeline finished without a result');
    if (status !== FinalStatus.OK) {
      throw new NbackupError(
        status === FinalStatus.CHECKSUM_MISMATCH ? 'checksum' : 'server',
        `server did not commit the backup: ${statusName(FinalStatus, status)}`,
      );
    }
    const outcome: BackupOutcome = {
      backup: entry.name,
      sessionId,
      bytes: result.size,
      sha256: result.sha256.toString('hex'),
      files: result.pack.files,
      warnings: result.pack.warnings,
      durationMs: Date.now() - started,
    };
    blog.info(
      {
        session: sessionId,
        bytes: outcome.bytes,
        tarBytes: result.pack.tarBytes,
        files: outcome.files,
        warnings: outcome.warnings,
        sha256: outcome.sha256,
        durationS: outcome.durationMs / 1000,
        mbPerS: Number((result.pack.tarBytes / 1048576 / Math.max(outcome.durationMs / 1000, 0.001)).toFixed(1)),
      },
      'backup committed',
    );
    return outcome;
  } catch (err) {
    throw err instanceof NbackupError ? err : new NbackupError('internal', errorMessage(err), { cause: err });
  } finally {
    socket.destroy();
  }
}


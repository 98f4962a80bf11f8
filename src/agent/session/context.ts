import type { AgentConfig } from '../../config/index.js';
import type { Logger } from '../../log/logger.js';
import type { TlsMaterial } from '../../tls/material.js';
import type { RingBuffer } from '../pipeline/ring-buffer.js';
import type { Socket } from 'node:net';
import { writeWithBackpressure } from '../../net/frame-socket.js';
import type { PackStats } from '../pipeline/tar-packer.js';
import type { ProgressSample } from '../progress.js';
import type { ControlClient } from '../control/control-client.js';
import type { Pacer } from './pacer.js';

/** What every part of a backup run shares: configuration, certificates, log, progress, abort. */
export interface BackupContext {
  config: AgentConfig;
  material: TlsMaterial;
  log: Logger;
  onProgress?: (p: ProgressSample) => void;
  /** Aborts the run: the per-run time limit, or a stopping daemon. */
  signal?: AbortSignal;
  /** The entry's bandwidth_limit, shared by all its streams. */
  pacer?: Pacer;
  /** Fires when the daemon starts stopping: a retry back-off is not waited out then. */
  stopping?: AbortSignal;
  /** The control channel, when there is one: admission, rotation and aborts come over it. */
  control?: ControlClient;
}

/** What ends a retry back-off early: the run's abort, or a stopping daemon. */
export function backoffSignal(ctx: BackupContext): AbortSignal | undefined {
  const signals = [ctx.signal, ctx.stopping].filter((s): s is AbortSignal => s !== undefined);
  return signals.length <= 1 ? signals[0] : AbortSignal.any(signals);
}

/** Counters across every connection of one backup run. */
export interface RunStats {
  started: number;
  reconnects: number;
  /** Body bytes written to sockets, including resends. */
  bytesSent: number;
  bytesResent: number;
  /** Furthest body offset ever sent, to count what a resume sends twice. */
  highWater: number;
  /** The packer's live counters (tar bytes read, files), for progress. */
  pack?: PackStats;
  /** Data streams connected now (parallel sessions), for progress. */
  streams?: number;
}

export function newRunStats(): RunStats {
  return { started: Date.now(), reconnects: 0, bytesSent: 0, bytesResent: 0, highWater: 0 };
}

/** Largest piece handed to one socket.write: big enough to amortise, small enough to interleave. */
export const SEND_SLICE = 256 * 1024;

/** How long a read may wait when the peer is rightly silent for the whole backup. */
export const NO_DEADLINE_MS = 7 * 24 * 3600 * 1000;

export function reportProgress(ctx: BackupContext, stats: RunStats, ring: RingBuffer, done = false): void {
  ctx.onProgress?.({
    sent: stats.bytesSent,
    acked: ring.tail,
    produced: ring.head,
    read: stats.pack?.bytesRead,
    files: stats.pack?.files,
    streams: stats.streams,
    done,
    retries: stats.reconnects,
  });
}

/** How much of the ring one write takes: SEND_SLICE, or less when a bandwidth limit paces it. */
export function sliceSize(ctx: BackupContext): number {
  return ctx.pacer ? Math.min(SEND_SLICE, ctx.pacer.sliceBytes) : SEND_SLICE;
}

/** Writes one slice (after the pacer allows it, if any) and waits until the socket takes more. */
export async function sendSlice(ctx: BackupContext, socket: Socket, view: Buffer): Promise<void> {
  if (ctx.pacer) await ctx.pacer.take(view.length, ctx.signal);
  const wait = writeWithBackpressure(socket, view);
  if (wait) await wait;
}

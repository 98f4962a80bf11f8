import type tls from 'node:tls';
import type { AgentConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { TlsMaterial } from '../tls/material.js';
import { connectServer } from './connection.js';

/** What single-stream and parallel sessions share: context, counters, reconnecting with backoff. */
export interface BackupContext {
  config: AgentConfig;
  material: TlsMaterial;
  log: Logger;
  onProgress?: (p: { sent: number; acked: number; produced: number; done: boolean; retries: number }) => void;
  signal?: AbortSignal;
}

/** Largest piece handed to one socket.write: big enough to amortise, small enough to interleave. */
export const SEND_SLICE = 256 * 1024;
/** The current session cannot be resumed; the job starts over with a new one. */
export class RestartSession extends Error {}

/** Counters across every connection of one backup run. */
export interface RunStats {
  started: number;
  reconnects: number;
  /** Body bytes written to sockets, including resends. */
  bytesSent: number;
  bytesResent: number;
  /** Furthest body offset ever sent, to count what a resume sends twice. */
  highWater: number;
}

export function isRetryable(err: unknown): boolean {
  return err instanceof NbackupError && (err.kind === 'network' || err.kind === 'timeout');
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Connects, retrying with exponential backoff while the failure is a network one. */
export async function connectWithRetry(ctx: BackupContext, blog: Logger, stats: RunStats, failures: { n: number }): Promise<tls.TLSSocket> {
  const { retry } = ctx.config;
  for (;;) {
    try {
      return await connectServer(ctx.config.server, ctx.material, retry.connect_timeout);
    } catch (err) {
      failures.n++;
      if (!isRetryable(err) || failures.n >= retry.max_attempts) throw err;
      const delay = backoff(retry, failures.n);
      blog.warn({ err: errorMessage(err), attempt: failures.n, delayMs: delay }, 'connection failed; retrying');
      stats.reconnects++;
      await sleep(delay, ctx.signal);
    }
  }
}

export function backoff(retry: AgentConfig['retry'], failures: number): number {
  return Math.min(retry.max_delay, retry.initial_delay * 2 ** Math.max(0, failures - 1));
}


import type tls from 'node:tls';
import { AbortReason, statusName } from '../../../protocol/constants.js';
import { decodeControlFromServer, encodeControlFromAgent, encodeControlOpen, type ControlFromServer } from '../../../protocol/frames.js';
import type { AgentConfig } from '../../config/index.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { FrameSocket } from '../../net/frame-socket.js';
import type { TlsMaterial } from '../../tls/material.js';
import { connectServer } from '../../net/connect-server.js';
import { sleep } from '../session/retry.js';

/**
 * The agent's control channel (spec §5): one long-lived `CTRL` connection, pinged every
 * keepalive interval. Each pong gives an RTT sample (kept as an EWMA, α = 0.25) and the server's
 * load and free disk, logged at debug. No pong within 2.5 × the interval, or any break, and the
 * channel reconnects after `reconnect_delay`, doubling up to `max_reconnect_delay`.
 *
 * Backups never wait on it except to be admitted (waitForAdmission, bounded by the caller); what
 * it carries from the server (CADM, CDFE, CROT, CABT) is handed to whoever listens, and a channel
 * that is down simply means nobody hears it.
 */
const RTT_ALPHA = 0.25;

export type RotateHandler = (streamIndex: number) => Promise<void>;

export class ControlClient {
  /** Round-trip time, EWMA of the ping/pong samples, in ms (null before the first pong). */
  rttMs: number | null = null;
  private socket: tls.TLSSocket | null = null;
  /** True from the first pong of a connection until it breaks: the server knows the channel. */
  private up = false;
  private readonly stopper = new AbortController();
  private admittedAt = 0;
  private deferredUntil = 0;
  private readonly admitWaiters = new Set<() => void>();
  private readonly upWaiters = new Set<() => void>();
  private running: Promise<void> | null = null;
  /** A running parallel backup drains a stream when asked (CROT); resolves once it is drained. */
  onRotate: RotateHandler | null = null;

  constructor(
    private readonly config: AgentConfig,
    private readonly material: TlsMaterial,
    private readonly log: Logger,
  ) {}

  get connected(): boolean {
    return this.up;
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    this.socket?.destroy();
    await this.running;
  }

  /** Resolves once the channel is up (first pong), or after timeoutMs; true if it is up. */
  waitUntilUp(timeoutMs: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true);
    return this.waitOn(this.upWaiters, timeoutMs).done.then(() => this.up);
  }

  /**
   * Waits for the server's CADM received after `since` (ms since epoch), at most the time the
   * server asked to wait (CDFE) or `fallbackMs`; true when admitted. Rejects if `signal` aborts.
   */
  async waitForAdmission(since: number, fallbackMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.admittedAt >= since) return true;
    const until = this.deferredUntil > Date.now() ? this.deferredUntil : Date.now() + fallbackMs;
    const wake = this.waitOn(this.admitWaiters, until - Date.now());
    if (!signal) {
      await wake.done;
      return this.admittedAt >= since;
    }
    // The abort ends the wait (rejecting with its reason); nothing is left running either way.
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([wake.done, aborted]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      wake.cancel();
    }
    return this.admittedAt >= since;
  }

  /** Resolves when `set` is woken or after timeoutMs; `cancel` ends the wait early (no timer left). */
  private waitOn(set: Set<() => void>, timeoutMs: number): { done: Promise<void>; cancel: () => void } {
    let cancel!: () => void;
    const done = new Promise<void>((resolve) => {
      cancel = (): void => {
        clearTimeout(timer);
        set.delete(cancel);
        resolve();
      };
      const timer = setTimeout(cancel, Math.max(0, timeoutMs));
      set.add(cancel);
    });
    return { done, cancel };
  }

  private async loop(): Promise<void> {
    const cc = this.config.daemon.control_channel;
    let delay = cc.reconnect_delay;
    while (!this.stopper.signal.aborted) {
      let reached = false;
      try {
        const socket = await connectServer(this.config.server, this.material, this.config.retry.connect_timeout, this.stopper.signal);
        this.socket = socket;
        reached = true;
        await this.converse(socket);
      } catch (err) {
        if (this.stopper.signal.aborted) break;
        this.log.warn({ err: errorMessage(err), delayMs: reached ? cc.reconnect_delay : delay }, 'control channel down; reconnecting');
      } finally {
        this.up = false;
        this.socket?.destroy();
        this.socket = null;
      }
      if (reached) delay = cc.reconnect_delay;
      await sleep(delay, this.stopper.signal).catch(() => undefined);
      if (!reached) delay = Math.min(delay * 2, cc.max_reconnect_delay);
    }
  }

  /** One connection's life: open, ping every interval, handle frames until it breaks. */
  private async converse(socket: tls.TLSSocket): Promise<void> {
    const keepalive = this.config.daemon.control_channel.keepalive_interval;
    const frames = new FrameSocket(socket);
    const ping = (): void => {
      if (!socket.destroyed) socket.write(encodeControlFromAgent({ type: 'ping', timestampNs: nowNs() }));
    };
    socket.write(encodeControlOpen({ keepaliveSeconds: Math.max(1, Math.round(keepalive / 1000)) }));
    ping();
    const timer = setInterval(ping, keepalive);
    try {
      for (;;) this.handle(await frames.read(decodeControlFromServer, keepalive * 2.5, 'control frame from the server'), socket);
    } finally {
      clearInterval(timer);
    }
  }

  private handle(msg: ControlFromServer, socket: tls.TLSSocket): void {
    switch (msg.type) {
      case 'pong': {
        const sample = Number(nowNs() - msg.timestampNs) / 1e6;
        this.rttMs = this.rttMs === null ? sample : RTT_ALPHA * sample + (1 - RTT_ALPHA) * this.rttMs;
        if (!this.up) {
          this.up = true;
          this.log.info({ rttMs: round(sample) }, 'control channel up');
          for (const w of [...this.upWaiters]) w();
        }
        this.log.debug({ rttMs: round(this.rttMs), sampleMs: round(sample), serverLoad: round(msg.load), serverFreeMiB: msg.freeMiB }, 'control pong');
        return;
      }
      case 'admit':
        this.admittedAt = Date.now();
        this.log.info({ slot: msg.slot }, 'admitted by the server');
        for (const w of [...this.admitWaiters]) w();
        return;
      case 'defer':
        this.deferredUntil = Date.now() + msg.minutes * 60_000;
        this.log.info({ minutes: msg.minutes }, 'the server asks to wait before starting a backup');
        return;
      case 'rotate': {
        const index = msg.streamIndex;
        const drained = this.onRotate ? this.onRotate(index) : Promise.resolve();
        this.log.info({ stream: index }, 'the server asks to rotate a stream');
        void drained
          .catch((err: unknown) => this.log.warn({ stream: index, err: errorMessage(err) }, 'stream rotation failed'))
          .then(() => {
            if (!socket.destroyed) socket.write(encodeControlFromAgent({ type: 'rotate-ack', streamIndex: index }));
          });
        return;
      }
      case 'abort': {
        const reason = abortReasonText(msg.reason);
        // The session itself fails on its own connection with the same cause (Final ACK NO_SPACE).
        this.log.error({ reason }, `the server aborted the backup: ${reason}`);
        return;
      }
    }
  }
}

function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

function round(n: number): number {
  return Number(n.toFixed(3));
}

function abortReasonText(reason: number): string {
  switch (reason) {
    case AbortReason.DISK_FULL:
      return 'its storage disk is below its reserve';
    case AbortReason.SERVER_BUSY:
      return 'the server is busy';
    case AbortReason.MAINTENANCE:
      return 'the server is in maintenance';
    default:
      return `reason ${statusName(AbortReason, reason)}`;
  }
}

import type tls from 'node:tls';
import { AbortReason, statusName } from '../../../protocol/constants.js';
import { decodeControlFromServer, encodeControlFromAgent, encodeControlOpen, type ControlFromServer } from '../../../protocol/frames.js';
import type { AgentConfig } from '../../config/index.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { FrameSocket, whenDrained } from '../../net/frame-socket.js';
import type { TlsMaterial } from '../../tls/material.js';
import { connectServer } from '../../net/connect-server.js';
import { sleep } from '../session/retry.js';
import { timerDelay } from '../../timer-limit.js';

/**
 * The agent's control channel (spec §5): one long-lived `CTRL` connection, pinged every
 * keepalive interval. Each pong gives an RTT sample (kept as an EWMA, α = 0.25) and the server's
 * load and free disk, logged at debug. No pong within 2.5 × the interval, or any break, and the
 * channel reconnects after `reconnect_delay`, doubling up to `max_reconnect_delay`.
 *
 * Backups never wait on it except to be admitted (waitForAdmission, bounded by the caller); what
 * it carries from the server (CADM, CDFE, CROT, CABT) is handed to whoever listens, and a channel
 * that is down simply means nobody hears it.
 *
 * A daemon has one ControlClient for its whole life (unless a reload turns the channel off or on),
 * and a running backup holds that object, not a connection. A reload (reconfigure) that changes
 * nothing the channel depends on keeps the connection as it is; one that does reconnects this same
 * client at once with the new settings, so the backup's rotation handler and admission wait go on
 * hearing the server on the new connection (the server keeps the newest channel of an agent).
 */
const RTT_ALPHA = 0.25;
/** Answers queued for a server that does not read them, before the channel stops reading. */
const MAX_UNSENT_BYTES = 64 * 1024;
/** Longest wait a CDFE is heard as. */
const MAX_DEFER_MINUTES = 60;

export type RotateHandler = (streamIndex: number) => Promise<void>;

export class ControlClient {
  /** Round-trip time, EWMA of the ping/pong samples, in ms (null before the first pong). */
  rttMs: number | null = null;
  private socket: tls.TLSSocket | null = null;
  /** True from the first pong of a connection until it breaks: the server knows the channel. */
  private up = false;
  private readonly stopper = new AbortController();
  /** Ends the current connection, connection attempt or reconnect delay (stop, reconfigure). */
  private attempt = new AbortController();
  private admittedAt = 0;
  private deferredUntil = 0;
  /** Streams whose rotation (CROT) is under way: a repeated CROT for one of them is the same request. */
  private readonly rotating = new Set<number>();
  private readonly admitWaiters = new Set<() => void>();
  private readonly upWaiters = new Set<() => void>();
  private running: Promise<void> | null = null;
  /** A running parallel backup drains a stream when asked (CROT); resolves once it is drained. */
  onRotate: RotateHandler | null = null;

  constructor(
    private config: AgentConfig,
    private material: TlsMaterial,
    private log: Logger,
  ) {}

  get connected(): boolean {
    return this.up;
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    this.attempt.abort();
    this.socket?.destroy();
    await this.running;
  }

  /**
   * A reloaded configuration (and the logger's new child, at the reloaded level). True when it
   * changed something the channel depends on, which then reconnects at once; else the connection
   * is kept as it is (later connections use the new connect_timeout).
   */
  reconfigure(config: AgentConfig, material: TlsMaterial, log: Logger): boolean {
    const changed = channelDiffers(this.config, this.material, config, material);
    this.config = config;
    this.material = material;
    this.log = log;
    if (!changed) return false;
    this.log.info({ server: `${config.server.host}:${config.server.port}` }, 'control channel settings changed; reconnecting');
    this.attempt.abort();
    this.socket?.destroy();
    return true;
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
      const timer = setTimeout(cancel, timerDelay(timeoutMs));
      set.add(cancel);
    });
    return { done, cancel };
  }

  private async loop(): Promise<void> {
    let delay = this.config.daemon.control_channel.reconnect_delay;
    while (!this.stopper.signal.aborted) {
      const attempt = (this.attempt = new AbortController());
      let reached = false;
      try {
        const socket = await connectServer(this.config.server, this.material, this.config.retry.connect_timeout, attempt.signal);
        this.socket = socket;
        reached = true;
        await this.converse(socket);
      } catch (err) {
        if (this.stopper.signal.aborted) break;
        if (!attempt.signal.aborted) this.log.warn({ err: errorMessage(err), delayMs: reached ? this.config.daemon.control_channel.reconnect_delay : delay }, 'control channel down; reconnecting');
      } finally {
        this.up = false;
        this.socket?.destroy();
        this.socket = null;
      }
      const cc = this.config.daemon.control_channel;
      if (reached) delay = cc.reconnect_delay;
      // Reconfigured (now or during the delay): at once, with the new settings.
      if (!attempt.signal.aborted) await sleep(delay, attempt.signal).catch(() => undefined);
      if (attempt.signal.aborted) delay = cc.reconnect_delay;
      else if (!reached) delay = Math.min(delay * 2, cc.max_reconnect_delay);
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
      for (;;) {
        // Answers (pings, CRAKs) the server does not take stop the reading: its frames wait in TCP.
        if (socket.writableLength > MAX_UNSENT_BYTES) await whenDrained(socket);
        this.handle(await frames.read(decodeControlFromServer, keepalive * 2.5, 'control frame from the server'));
      }
    } finally {
      clearInterval(timer);
    }
  }

  private handle(msg: ControlFromServer): void {
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
      case 'defer': {
        // The server's own ask is a minute; longer is heard as an hour at most (then the agent asks again).
        const minutes = Math.min(msg.minutes, MAX_DEFER_MINUTES);
        this.deferredUntil = Date.now() + minutes * 60_000;
        this.log.info({ minutes, asked: msg.minutes }, 'the server asks to wait before starting a backup');
        return;
      }
      case 'rotate': {
        const index = msg.streamIndex;
        // A CROT for a stream already rotating is the same request: its one CRAK answers both. So a
        // server that repeats itself costs at most one rotation, log line and answer per stream.
        if (this.rotating.has(index)) return;
        this.rotating.add(index);
        const drained = this.onRotate ? this.onRotate(index) : Promise.resolve();
        this.log.info({ stream: index }, 'the server asks to rotate a stream');
        // The answer goes on the channel as it is once drained: a reconnect since takes it too.
        void drained
          .catch((err: unknown) => this.log.warn({ stream: index, err: errorMessage(err) }, 'stream rotation failed'))
          .then(() => {
            this.rotating.delete(index);
            const now = this.socket;
            if (now && !now.destroyed) now.write(encodeControlFromAgent({ type: 'rotate-ack', streamIndex: index }));
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

/**
 * Whether two configurations need different connections: another server address or agent name,
 * other certificate or key contents (a path that changed to the same bytes does not count), other
 * daemon.control_channel settings.
 */
function channelDiffers(a: AgentConfig, am: TlsMaterial, b: AgentConfig, bm: TlsMaterial): boolean {
  const settings = (c: AgentConfig): string => JSON.stringify([c.agent.name, c.server.host, c.server.port, c.daemon.control_channel]);
  return settings(a) !== settings(b) || !am.ca.equals(bm.ca) || !am.cert.equals(bm.cert) || !am.key.equals(bm.key);
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

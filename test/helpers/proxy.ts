/**
 * A TCP fault-injection proxy on 127.0.0.1. It forwards bytes blindly (TLS passes through
 * untouched) and, per accepted connection, can reset it, stall it or refuse it:
 *
 *   { resetAfterBytes: n }  forward normally until n client→server bytes have been forwarded (and
 *                           handed to the kernel), then reset BOTH sides (RST via resetAndDestroy).
 *   { stallAfterBytes: n }  after n client→server bytes, forward nothing more in either direction
 *                           and stop reading, but keep both sockets open, ignoring their FINs and
 *                           errors — a silent, half-dead network — until the proxy is closed.
 *   { refuse: true }        destroy the accepted connection at once (no upstream connection).
 *   { throttleBytesPerSec: n }
 *                           forward client→server at no more than n bytes/s (token bucket, at
 *                           most 50 ms of burst; the client is paused while 64 KiB wait in the
 *                           proxy); server→client is forwarded unthrottled. A half-close from the
 *                           client reaches the server once everything queued is forwarded.
 *   { forward: true }       plain forwarding (same as having no plan).
 *
 * Plans are a queue: each accepted connection takes the next one; when the queue is empty,
 * connections just forward. `startProxy({ plan })` makes the i-th connection follow plan[i].
 */
import net from 'node:net';
import { listenOnLoopback, waitUntil } from './wait.js';

export type ConnPlan =
  | { resetAfterBytes: number }
  | { stallAfterBytes: number }
  | { refuse: true }
  | { throttleBytesPerSec: number }
  | { forward: true };

export type ConnState = 'connecting' | 'open' | 'resetting' | 'reset' | 'stalled' | 'refused' | 'closed';

export interface ConnInfo {
  /** 0-based order of acceptance. */
  readonly index: number;
  /** The plan this connection followed (undefined = plain forwarding). */
  readonly plan: ConnPlan | undefined;
  state: ConnState;
  bytesClientToServer: number;
  bytesServerToClient: number;
  clientError?: string;
  upstreamError?: string;
}

export interface ProxyOptions {
  target: { host: string; port: number };
  plan?: ConnPlan[];
  /**
   * For resetAfterBytes: how long to wait for the last forwarded bytes to reach the kernel before
   * resetting anyway (the upstream may not be reading). Default 1000 ms.
   */
  resetFlushTimeoutMs?: number;
}

export interface Proxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Number of connections accepted so far. */
  readonly connections: number;
  /** Total client→server bytes forwarded, over all connections. */
  readonly bytesClientToServer: number;
  /** Total server→client bytes forwarded, over all connections. */
  readonly bytesServerToClient: number;
  /** Per-connection details, in order of acceptance. */
  readonly conns: readonly ConnInfo[];
  /** Plans not yet taken by a connection. */
  readonly pendingPlans: readonly ConnPlan[];
  /** Replaces the queue of plans: the next accepted connection takes plan[0]. */
  setPlan(plan: ConnPlan[]): void;
  /** Appends plans to the queue. */
  pushPlan(...plan: ConnPlan[]): void;
  /** Resolves once `pred(proxy)` is true (checked every 10 ms); rejects after timeoutMs (default 5000). */
  waitFor(pred: (p: Proxy) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Resolves once at least n connections have been accepted. */
  waitForConnections(n: number, timeoutMs?: number): Promise<void>;
  /** Resets (RST) both sides of connection `index` now, whatever its plan. */
  reset(index: number): void;
  /** Destroys every socket (stalled ones included) and stops listening. */
  close(): Promise<void>;
}

function kill(sock: net.Socket, reset: boolean): void {
  if (sock.destroyed) return;
  try {
    if (reset && !sock.connecting && typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

class FaultProxy implements Proxy {
  readonly host = '127.0.0.1' as const;
  private server: net.Server;
  private queue: ConnPlan[];
  private readonly infos: ConnInfo[] = [];
  private readonly sockets = new Set<net.Socket>();
  private totalC2S = 0;
  private totalS2C = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly cutters = new Map<number, () => void>();

  constructor(private readonly opts: ProxyOptions) {
    this.queue = [...(opts.plan ?? [])];
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.onConnection(s));
    this.server.on('error', () => undefined);
  }

  listen(): Promise<void> {
    return listenOnLoopback(this.server);
  }

  get port(): number {
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('proxy is not listening');
    return addr.port;
  }
  get connections(): number {
    return this.infos.length;
  }
  get bytesClientToServer(): number {
    return this.totalC2S;
  }
  get bytesServerToClient(): number {
    return this.totalS2C;
  }
  get conns(): readonly ConnInfo[] {
    return this.infos;
  }
  get pendingPlans(): readonly ConnPlan[] {
    return this.queue;
  }

  setPlan(plan: ConnPlan[]): void {
    this.queue = [...plan];
  }
  pushPlan(...plan: ConnPlan[]): void {
    this.queue.push(...plan);
  }

  waitFor(pred: (p: Proxy) => boolean, timeoutMs = 5000, what = 'proxy condition'): Promise<void> {
    return waitUntil(() => pred(this), timeoutMs, what, () => `connections=${this.connections} c2s=${this.totalC2S} s2c=${this.totalS2C} states=[${this.infos.map((i) => i.state).join(',')}]`);
  }

  reset(index: number): void {
    this.cutters.get(index)?.();
  }

  waitForConnections(n: number, timeoutMs = 5000): Promise<void> {
    return this.waitFor((p) => p.connections >= n, timeoutMs, `${n} connection(s)`);
  }

  private track(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
  }

  private onConnection(client: net.Socket): void {
    const plan = this.queue.shift();
    const info: ConnInfo = {
      index: this.infos.length,
      plan,
      state: 'connecting',
      bytesClientToServer: 0,
      bytesServerToClient: 0,
    };
    this.infos.push(info);
    this.track(client);
    client.on('error', (err) => {
      info.clientError ??= err.message;
    });
    if (this.closed) {
      info.state = 'closed';
      client.destroy();
      return;
    }
    if (plan && 'refuse' in plan && plan.refuse) {
      info.state = 'refused';
      client.destroy();
      return;
    }

    let limit: number | undefined;
    let action: 'reset' | 'stall' | undefined;
    if (plan && 'resetAfterBytes' in plan) {
      limit = plan.resetAfterBytes;
      action = 'reset';
    } else if (plan && 'stallAfterBytes' in plan) {
      limit = plan.stallAfterBytes;
      action = 'stall';
    }

    const throttle = plan && 'throttleBytesPerSec' in plan ? Math.max(1, plan.throttleBytesPerSec) : undefined;

    const upstream = net.connect({ host: this.opts.target.host, port: this.opts.target.port, allowHalfOpen: true });
    this.track(upstream);
    this.cutters.set(info.index, () => {
      info.state = 'reset';
      kill(client, true);
      kill(upstream, true);
    });
    const live = () => info.state === 'open';

    const doReset = () => {
      if (info.state !== 'resetting') return;
      info.state = 'reset';
      kill(client, true);
      kill(upstream, true);
    };
    const trigger = (flushed?: Promise<void>) => {
      if (action === 'reset') {
        info.state = 'resetting';
        if (!flushed) return doReset();
        // The upper bound: an upstream that does not read never flushes, so reset anyway then.
        const timer = setTimeout(doReset, this.opts.resetFlushTimeoutMs ?? 1000);
        void flushed.then(() => {
          clearTimeout(timer);
          doReset();
        });
      } else {
        info.state = 'stalled';
        client.pause();
        upstream.pause();
      }
    };

    // Backpressure: pause the source while the destination's buffer is full.
    const waitingDrain = new Set<net.Socket>();
    const forward = (src: net.Socket, dst: net.Socket, chunk: Buffer, onFlushed?: () => void): void => {
      const ok = dst.write(chunk, onFlushed ? () => onFlushed() : undefined);
      if (!ok && !waitingDrain.has(dst)) {
        waitingDrain.add(dst);
        src.pause();
        dst.once('drain', () => {
          waitingDrain.delete(dst);
          if (live()) src.resume();
        });
      }
    };

    // Throttled client→server forwarding: a queue drained by a token bucket every 10 ms.
    const throttled = throttle === undefined ? undefined : this.makeThrottle(throttle, client, upstream, info, live);

    client.on('data', (chunk: Buffer) => {
      if (!live() || upstream.destroyed) return;
      if (throttled) {
        throttled.push(chunk);
        return;
      }
      let part = chunk;
      let hit = false;
      if (limit !== undefined) {
        const remaining = limit - info.bytesClientToServer;
        if (chunk.length >= remaining) {
          part = chunk.subarray(0, Math.max(0, remaining));
          hit = true;
        }
      }
      let flushed: Promise<void> | undefined;
      if (part.length > 0) {
        info.bytesClientToServer += part.length;
        this.totalC2S += part.length;
        if (hit && action === 'reset') {
          let done!: () => void;
          flushed = new Promise<void>((r) => (done = r));
          forward(client, upstream, part, done);
        } else {
          forward(client, upstream, part);
        }
      }
      if (hit) trigger(flushed);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!live() || client.destroyed) return;
      info.bytesServerToClient += chunk.length;
      this.totalS2C += chunk.length;
      forward(upstream, client, chunk);
    });

    upstream.once('connect', () => {
      if (info.state !== 'connecting') return;
      if (client.destroyed) {
        info.state = 'closed';
        kill(upstream, false);
        return;
      }
      info.state = 'open';
      throttled?.start();
      if (limit !== undefined && limit <= 0) {
        trigger();
        return;
      }
      client.resume();
    });

    // Half-closes propagate; errors (RST from a peer, refused upstream) become a reset of the other side.
    client.on('end', () => {
      if (!live() || upstream.destroyed) return;
      if (throttled) throttled.end();
      else upstream.end();
    });
    upstream.on('end', () => {
      if (live() && !client.destroyed) client.end();
    });
    upstream.on('error', (err) => {
      info.upstreamError ??= err.message;
    });
    const onClose = (self: net.Socket, other: net.Socket) => (hadError: boolean) => {
      if (info.state !== 'open' && info.state !== 'connecting') return;
      if (hadError) {
        info.state = 'closed';
        kill(other, true);
      } else if (!other.destroyed) {
        other.end();
      }
      if (self.destroyed && other.destroyed) info.state = 'closed';
    };
    client.on('close', onClose(client, upstream));
    upstream.on('close', onClose(upstream, client));
    client.on('close', () => {
      if (upstream.destroyed && (info.state === 'open' || info.state === 'connecting')) info.state = 'closed';
    });
    upstream.on('close', () => {
      if (client.destroyed && (info.state === 'open' || info.state === 'connecting')) info.state = 'closed';
    });
  }

  /** The queue and token bucket of one { throttleBytesPerSec } connection (client→server only). */
  private makeThrottle(
    rate: number,
    client: net.Socket,
    upstream: net.Socket,
    info: ConnInfo,
    live: () => boolean,
  ): { push(chunk: Buffer): void; end(): void; start(): void } {
    const HIGH = 64 * 1024;
    const LOW = 16 * 1024;
    const burst = Math.max(1024, Math.floor(rate / 20));
    const queue: Buffer[] = [];
    let queued = 0;
    let allowance = 0;
    let last = Date.now();
    let paused = false;
    let blocked = false;
    let ending = false;
    let timer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      if (timer) clearInterval(timer);
      timer = undefined;
    };
    const pump = (): void => {
      if (!live() || upstream.destroyed) return stop();
      const now = Date.now();
      allowance = Math.min(burst, allowance + ((now - last) * rate) / 1000);
      last = now;
      while (!blocked && queue.length > 0 && allowance >= 1) {
        const head = queue[0];
        const n = Math.min(head.length, Math.floor(allowance));
        if (n === head.length) queue.shift();
        else queue[0] = head.subarray(n);
        queued -= n;
        allowance -= n;
        info.bytesClientToServer += n;
        this.totalC2S += n;
        if (!upstream.write(head.subarray(0, n))) {
          blocked = true;
          upstream.once('drain', () => (blocked = false));
        }
      }
      if (paused && queued < LOW) {
        paused = false;
        client.resume();
      }
      if (ending && queue.length === 0) {
        ending = false;
        upstream.end();
      }
    };
    client.once('close', stop);
    upstream.once('close', stop);
    return {
      push: (chunk) => {
        queue.push(chunk);
        queued += chunk.length;
        if (queued >= HIGH && !paused) {
          paused = true;
          client.pause();
        }
      },
      end: () => {
        ending = true;
        pump();
      },
      start: () => {
        last = Date.now();
        timer = setInterval(pump, 10); // the scenario: the token bucket's clock, stopped on close
        timer.unref();
      },
    };
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000); // the upper bound: close() is bounded no matter what
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
    });
    return this.closing;
  }
}

/** Starts a proxy on 127.0.0.1 (ephemeral port) forwarding to `target`. */
export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const p = new FaultProxy(opts);
  await p.listen();
  return p;
}

/**
 * A TLS-terminating man-in-the-middle proxy on 127.0.0.1, so tests can cut a connection at an
 * exact plaintext (protocol) offset rather than somewhere in the TLS record stream.
 *
 * Towards the agent it is a TLS 1.3 server with the test PKI's server certificate that, like the
 * real server, requires a client certificate issued by the test CA. For every accepted connection
 * it opens a TLS 1.3 connection to the real server, presenting the agent's client certificate
 * (given in the options) and verifying the server against the CA. Plaintext is forwarded both
 * ways with backpressure; a half-close (close_notify + FIN) on one side becomes a half-close on
 * the other.
 *
 * Per accepted connection, a plan (a queue, like proxy.ts: the i-th connection takes plan[i],
 * later ones just forward):
 *
 *   { holdBackAtClientEnd: n }       forward client→server plaintext but always keep the last n
 *                                    bytes seen unforwarded; when the client half-closes, wait for
 *                                    what was forwarded to be flushed upstream, then reset both
 *                                    sides (TCP RST) without ever forwarding those n bytes.
 *                                    The hold-back starts once the server has said something:
 *                                    the client's hello (which waits for the server's answer) is
 *                                    forwarded whole, or no session would ever start.
 *   { resetAfterPlaintextBytes: n }  forward the first n client→server plaintext bytes (counted
 *                                    from the first byte of the connection, handshake included),
 *                                    wait until they are flushed upstream, then reset both sides.
 *   { rewriteResumeOffset: x }       on an RSME connection, replace the u64 lastOffset of the
 *                                    server's 9-byte ResumeACK with x (status byte untouched).
 *                                    Any other kind of connection is forwarded unchanged.
 *   { swallowFinalAck: true }        on an NBKP connection, once the client has half-closed (its
 *                                    trailer is sent), forward the server's SACKs but not the
 *                                    Final ACK: reset both sides the moment it arrives, so the
 *                                    server has committed and the agent never hears it.
 *   { freezeAfterClientEnd: true }   once the client has half-closed (a parallel primary after
 *                                    its trailer), pass its end on, then nothing more either way:
 *                                    the server's answer and close never reach the client, whose
 *                                    connection stays open and silent (a hung server, a lost FIN).
 *   { forward: true }                plain forwarding (same as having no plan).
 *
 * "Flushed upstream" means delivered to the server's kernel: the TLS write callbacks have fired
 * (the encrypted bytes are in our kernel send buffer) AND that send buffer has drained, i.e. the
 * server's kernel has acknowledged every byte (tx_queue 0 in /proc/net/tcp). The second step
 * matters: a server applying backpressure has a zero receive window, and a RST throws away
 * whatever still sits in the sender's queue. A RST does not discard what the receiver's kernel
 * has already queued, so the server reads every forwarded byte before it sees the reset. (Where
 * /proc/net/tcp does not exist, the proxy waits a fixed 250 ms instead.)
 *
 * Every wait is bounded; close() destroys everything.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { listenOnLoopback, pollUntil, sleep, waitUntil } from './wait.js';

export type TlsConnPlan =
  | { holdBackAtClientEnd: number }
  | { resetAfterPlaintextBytes: number }
  | { rewriteResumeOffset: number }
  | { swallowFinalAck: true }
  | { freezeAfterClientEnd: true }
  | { forward: true };

export type TlsConnState =
  | 'handshaking' // TLS handshake with the client in progress
  | 'connecting' // client handshake done, connecting (TLS) to the server
  | 'open' // forwarding
  | 'resetting' // plan triggered, waiting for the forwarded bytes to be flushed
  | 'reset' // both sides reset by the plan
  | 'failed' // a TLS handshake (either side) failed
  | 'frozen' // freezeAfterClientEnd: nothing more is forwarded, the client's side stays open
  | 'closed'; // ended by the peers (or by close())

export interface TlsConnInfo {
  /** 0-based order of acceptance (TCP accept). */
  readonly index: number;
  /** The plan this connection followed (undefined = plain forwarding). */
  readonly plan: TlsConnPlan | undefined;
  state: TlsConnState;
  /** The first 4 plaintext bytes from the client (`NBKP`, `RSME`, `PING`, ...), once seen. */
  kind?: string;
  /** Plaintext bytes forwarded client→server. */
  bytesClientToServer: number;
  /** Plaintext bytes forwarded server→client. */
  bytesServerToClient: number;
  /** Plaintext bytes received from the client but never forwarded (holdBack / reset plans). */
  bytesDropped: number;
  /** True once the client half-closed (its `end` was seen). */
  clientEnded: boolean;
  /** For rewriteResumeOffset on an RSME connection: the ResumeACK as the server sent it. */
  resumeAck?: { status: number; lastOffset: number; rewrittenTo: number };
  /** For swallowFinalAck: the Final ACK bytes that were dropped. */
  swallowed?: Buffer;
  /** For the reset plans: false if the forwarded bytes were not confirmed delivered before the reset. */
  flushedBeforeReset?: boolean;
  clientError?: string;
  upstreamError?: string;
}

export interface TlsProxyOptions {
  /** The real server. */
  target: { host: string; port: number };
  /** PEM file paths. */
  tls: {
    /** CA that issued the server and agent certificates (verifies both sides). */
    ca: string;
    /** What the proxy presents to the agent. */
    serverCert: string;
    serverKey: string;
    /** What the proxy presents to the real server: the agent's own certificate. */
    clientCert: string;
    clientKey: string;
  };
  plan?: TlsConnPlan[];
  /** How long to wait for forwarded bytes to be delivered before resetting anyway. Default 5000 ms. */
  flushTimeoutMs?: number;
  /** TLS handshake timeout on both sides. Default 5000 ms. */
  handshakeTimeoutMs?: number;
}

export interface TlsProxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Connections accepted so far (TCP). */
  readonly connections: number;
  readonly conns: readonly TlsConnInfo[];
  readonly pendingPlans: readonly TlsConnPlan[];
  readonly bytesClientToServer: number;
  readonly bytesServerToClient: number;
  setPlan(plan: TlsConnPlan[]): void;
  pushPlan(...plan: TlsConnPlan[]): void;
  /** Resolves once pred(proxy) is true (checked every 10 ms); rejects after timeoutMs (default 5000). */
  waitFor(pred: (p: TlsProxy) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  waitForConnections(n: number, timeoutMs?: number): Promise<void>;
  /** Destroys every socket and stops listening (bounded). */
  close(): Promise<void>;
}

/** Convenience: the option block for the test PKI, proxying for `agent`. */
export function tlsProxyMaterial(
  pki: { caCert: string; serverCert: string; serverKey: string; agents: Record<string, { cert: string; key: string }> },
  agent: string,
): TlsProxyOptions['tls'] {
  const pair = pki.agents[agent];
  if (!pair) throw new Error(`no certificate for agent ${agent}`);
  return { ca: pki.caCert, serverCert: pki.serverCert, serverKey: pki.serverKey, clientCert: pair.cert, clientKey: pair.key };
}

function resetSocket(sock: net.Socket | undefined): void {
  if (!sock || sock.destroyed) return;
  try {
    if (!sock.connecting && typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

/** Counts a side's writes in flight, so one can wait until everything written is flushed. */
class Flusher {
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  write(sock: tls.TLSSocket, chunk: Buffer): boolean {
    this.inFlight++;
    return sock.write(chunk, () => {
      // Called on success and on error alike: either way nothing more will happen to it.
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.waiters.splice(0)) w();
    });
  }
  get idle(): boolean {
    return this.inFlight === 0;
  }
  /** Resolves once every write so far has completed, or after timeoutMs. */
  flushed(timeoutMs: number): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs); // the upper bound: a peer that never reads
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/**
 * Bytes of `sock`'s kernel send queue not yet acknowledged by the peer (Linux: tx_queue of the
 * socket's line in /proc/net/tcp); null when that cannot be known.
 */
async function txQueue(sock: net.Socket): Promise<number | null> {
  const local = sock.localPort;
  const remote = sock.remotePort;
  if (!local || !remote) return null;
  let text: string;
  try {
    text = await readFile('/proc/net/tcp', 'utf8');
  } catch {
    return null;
  }
  const hex = (n: number) => ':' + n.toString(16).toUpperCase().padStart(4, '0');
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length > 4 && f[1].endsWith(hex(local)) && f[2].endsWith(hex(remote))) return parseInt(f[4].split(':')[0], 16);
  }
  return null;
}

/** Resolves true once `sock`'s kernel send queue is empty, false after timeoutMs. */
async function sendQueueDrained(sock: net.Socket, timeoutMs: number): Promise<boolean> {
  let unknown = false;
  const drained = await pollUntil(
    async () => {
      const q = await txQueue(sock);
      unknown = q === null;
      return q === null || q === 0;
    },
    timeoutMs,
    5,
  );
  if (!unknown) return drained;
  // Unknown (no /proc, or the socket is gone): nothing to wait on, so a fixed grace period;
  // loopback is fast.
  await sleep(250);
  return !sock.destroyed;
}

interface Pending {
  info: TlsConnInfo;
  raw: net.Socket;
}

class TlsMitmProxy implements TlsProxy {
  readonly host = '127.0.0.1' as const;
  private readonly server: tls.Server;
  private queue: TlsConnPlan[];
  private readonly infos: TlsConnInfo[] = [];
  /** Accepted TCP sockets waiting for their TLS handshake, by remote port. */
  private readonly pending = new Map<number, Pending>();
  private readonly sockets = new Set<net.Socket>();
  private readonly ca: Buffer;
  private readonly clientCert: Buffer;
  private readonly clientKey: Buffer;
  private totalC2S = 0;
  private totalS2C = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: TlsProxyOptions) {
    this.queue = [...(opts.plan ?? [])];
    this.ca = readFileSync(opts.tls.ca);
    this.clientCert = readFileSync(opts.tls.clientCert);
    this.clientKey = readFileSync(opts.tls.clientKey);
    this.server = tls.createServer({
      ca: this.ca,
      cert: readFileSync(opts.tls.serverCert),
      key: readFileSync(opts.tls.serverKey),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      allowHalfOpen: true,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 5000,
    });
    this.server.on('error', () => undefined);
    // 'connection' gives the raw TCP socket (the TLS server wraps it in its own listener first).
    this.server.on('connection', (raw: net.Socket) => this.onAccept(raw));
    this.server.on('secureConnection', (sock: tls.TLSSocket) => this.onSecure(sock));
    this.server.on('tlsClientError', (err: Error, sock: tls.TLSSocket) => {
      const p = this.pending.get(sock.remotePort ?? -1);
      if (p) {
        this.pending.delete(p.raw.remotePort ?? -1);
        p.info.state = 'failed';
        p.info.clientError ??= err.message;
      }
      sock.destroy();
    });
  }

  listen(): Promise<void> {
    return listenOnLoopback(this.server);
  }

  get port(): number {
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('TLS proxy is not listening');
    return addr.port;
  }
  get connections(): number {
    return this.infos.length;
  }
  get conns(): readonly TlsConnInfo[] {
    return this.infos;
  }
  get pendingPlans(): readonly TlsConnPlan[] {
    return this.queue;
  }
  get bytesClientToServer(): number {
    return this.totalC2S;
  }
  get bytesServerToClient(): number {
    return this.totalS2C;
  }
  setPlan(plan: TlsConnPlan[]): void {
    this.queue = [...plan];
  }
  pushPlan(...plan: TlsConnPlan[]): void {
    this.queue.push(...plan);
  }

  waitFor(pred: (p: TlsProxy) => boolean, timeoutMs = 5000, what = 'TLS proxy condition'): Promise<void> {
    return waitUntil(() => pred(this), timeoutMs, what, () => this.describe());
  }

  waitForConnections(n: number, timeoutMs = 5000): Promise<void> {
    return this.waitFor((p) => p.connections >= n, timeoutMs, `${n} connection(s)`);
  }

  describe(): string {
    return (
      `connections=${this.connections} c2s=${this.totalC2S} s2c=${this.totalS2C} ` +
      `conns=[${this.infos.map((i) => `${i.index}:${i.kind ?? '?'}:${i.state}`).join(',')}]`
    );
  }

  private track(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
  }

  private onAccept(raw: net.Socket): void {
    const info: TlsConnInfo = {
      index: this.infos.length,
      plan: this.queue.shift(),
      state: 'handshaking',
      bytesClientToServer: 0,
      bytesServerToClient: 0,
      bytesDropped: 0,
      clientEnded: false,
    };
    this.infos.push(info);
    this.track(raw);
    raw.on('error', (err) => {
      info.clientError ??= err.message;
    });
    if (this.closed) {
      info.state = 'closed';
      raw.destroy();
      return;
    }
    const port = raw.remotePort ?? -1;
    this.pending.set(port, { info, raw });
    raw.once('close', () => {
      if (this.pending.get(port)?.raw === raw) {
        this.pending.delete(port);
        if (info.state === 'handshaking') info.state = 'failed';
      }
    });
  }

  private onSecure(client: tls.TLSSocket): void {
    const port = client.remotePort ?? -1;
    const p = this.pending.get(port);
    this.pending.delete(port);
    if (!p || this.closed) {
      client.destroy();
      return;
    }
    const { info, raw } = p;
    this.track(client);
    this.serve(info, raw, client);
  }

  private serve(info: TlsConnInfo, rawClient: net.Socket, client: tls.TLSSocket): void {
    const plan = info.plan;
    const flushTimeout = this.opts.flushTimeoutMs ?? 5000;
    info.state = 'connecting';
    client.pause();

    const rawUp = net.connect({ host: this.opts.target.host, port: this.opts.target.port, allowHalfOpen: true });
    this.track(rawUp);
    rawUp.on('error', (err) => {
      info.upstreamError ??= err.message;
    });
    const upstream = tls.connect({
      socket: rawUp,
      host: this.opts.target.host,
      ca: this.ca,
      cert: this.clientCert,
      key: this.clientKey,
      minVersion: 'TLSv1.3',
      rejectUnauthorized: true,
      // Not in @types/node's ConnectionOptions, but tls.connect passes it to the TLSSocket.
      allowHalfOpen: true,
    } as tls.ConnectionOptions);
    this.track(upstream);

    const live = () => info.state === 'open';
    const c2s = new Flusher();
    const s2c = new Flusher();

    const resetBoth = () => {
      if (info.state !== 'resetting') return;
      info.state = 'reset';
      resetSocket(rawClient);
      resetSocket(rawUp);
      client.destroy();
      upstream.destroy();
    };
    let lastServerData = Date.now();
    /**
     * With `waitServerQuiet`, also wait (bounded) until the server has said nothing for that long:
     * the server acknowledges what it has written 250 ms after its last write, so a quiet server
     * has read everything (bytes still in its receive queue would die with the RST).
     */
    const resetWhenFlushed = (waitServerQuiet = 0) => {
      info.state = 'resetting';
      client.pause();
      if (waitServerQuiet === 0) upstream.pause();
      const started = Date.now();
      void c2s
        .flushed(flushTimeout)
        .then(() => (c2s.idle ? sendQueueDrained(rawUp, Math.max(0, flushTimeout - (Date.now() - started))) : false))
        .then(async (ok) => {
          if (waitServerQuiet > 0) await pollUntil(async () => Date.now() - lastServerData >= waitServerQuiet, 5000, 50);
          info.flushedBeforeReset = ok;
          resetBoth();
        });
    };

    // Backpressure: pause the source while the destination's buffer is full.
    const waitingDrain = new Set<tls.TLSSocket>();
    const forward = (src: tls.TLSSocket, dst: tls.TLSSocket, flusher: Flusher, chunk: Buffer): void => {
      if (chunk.length === 0) return;
      const ok = flusher.write(dst, chunk);
      if (!ok && !waitingDrain.has(dst)) {
        waitingDrain.add(dst);
        src.pause();
        dst.once('drain', () => {
          waitingDrain.delete(dst);
          if (live()) src.resume();
        });
      }
    };
    const toServer = (chunk: Buffer) => {
      info.bytesClientToServer += chunk.length;
      this.totalC2S += chunk.length;
      forward(client, upstream, c2s, chunk);
    };
    const toClient = (chunk: Buffer) => {
      info.bytesServerToClient += chunk.length;
      this.totalS2C += chunk.length;
      forward(upstream, client, s2c, chunk);
    };

    // ── client → server ──
    let head = Buffer.alloc(0); // the first 4 bytes, to learn the kind
    let held = Buffer.alloc(0); // holdBackAtClientEnd: the last n bytes seen
    let serverSpoke = false; // holdBackAtClientEnd: holding back starts after the server's first byte
    client.on('data', (chunk: Buffer) => {
      if (!live()) {
        info.bytesDropped += chunk.length;
        return;
      }
      if (info.kind === undefined) {
        head = Buffer.concat([head, chunk.subarray(0, 4 - head.length)]);
        if (head.length >= 4) info.kind = head.toString('latin1');
      }
      if (plan && 'holdBackAtClientEnd' in plan && serverSpoke) {
        const n = plan.holdBackAtClientEnd;
        if (held.length + chunk.length <= n) {
          held = Buffer.concat([held, chunk]);
          return;
        }
        if (chunk.length >= n) {
          toServer(held);
          toServer(chunk.subarray(0, chunk.length - n));
          held = Buffer.from(chunk.subarray(chunk.length - n));
        } else {
          const all = Buffer.concat([held, chunk]);
          toServer(all.subarray(0, all.length - n));
          held = Buffer.from(all.subarray(all.length - n));
        }
        return;
      }
      if (plan && 'resetAfterPlaintextBytes' in plan) {
        const remaining = plan.resetAfterPlaintextBytes - info.bytesClientToServer;
        if (chunk.length >= remaining) {
          toServer(chunk.subarray(0, Math.max(0, remaining)));
          info.bytesDropped += chunk.length - Math.max(0, remaining);
          resetWhenFlushed();
          return;
        }
      }
      toServer(chunk);
    });

    // ── server → client ──
    let ackBuf: Buffer | null = plan && 'rewriteResumeOffset' in plan ? Buffer.alloc(0) : null;
    let pending = Buffer.alloc(0); // swallowFinalAck: server bytes after the client's half-close
    upstream.on('data', (chunk: Buffer) => {
      lastServerData = Date.now();
      if (!live()) return;
      serverSpoke = true;
      if (plan && 'swallowFinalAck' in plan && info.kind === 'NBKP' && info.clientEnded) {
        pending = Buffer.concat([pending, chunk]);
        // Whole SACKs ("SACK" + u64) go through; the first byte of anything else is the Final ACK.
        while (pending.length > 0 && pending[0] === 0x53) {
          if (pending.length < 12) return;
          toClient(pending.subarray(0, 12));
          pending = pending.subarray(12);
        }
        if (pending.length === 0) return;
        info.swallowed = Buffer.from(pending);
        info.state = 'resetting';
        resetBoth();
        return;
      }
      if (ackBuf !== null && plan && 'rewriteResumeOffset' in plan) {
        if (info.kind !== 'RSME') {
          // Not a resume: nothing to rewrite (the client always speaks first).
          ackBuf = null;
          toClient(chunk);
          return;
        }
        ackBuf = Buffer.concat([ackBuf, chunk]);
        if (ackBuf.length < 9) return;
        const ack = Buffer.from(ackBuf.subarray(0, 9));
        const rest = ackBuf.subarray(9);
        ackBuf = null;
        const original = Number(ack.readBigUInt64BE(1));
        ack.writeBigUInt64BE(BigInt(plan.rewriteResumeOffset), 1);
        info.resumeAck = { status: ack[0], lastOffset: original, rewrittenTo: plan.rewriteResumeOffset };
        toClient(ack);
        toClient(rest);
        return;
      }
      toClient(chunk);
    });

    upstream.once('secureConnect', () => {
      if (info.state !== 'connecting') return;
      if (client.destroyed) {
        info.state = 'closed';
        upstream.destroy();
        return;
      }
      info.state = 'open';
      if (plan && 'resetAfterPlaintextBytes' in plan && plan.resetAfterPlaintextBytes <= 0) {
        resetWhenFlushed();
        return;
      }
      client.resume();
    });

    // ── half-closes, errors, closes ──
    client.on('end', () => {
      info.clientEnded = true;
      if (!live()) return;
      if (plan && 'holdBackAtClientEnd' in plan) {
        info.bytesDropped += held.length;
        resetWhenFlushed(1000);
        return;
      }
      if (!upstream.destroyed) upstream.end();
      if (plan && 'freezeAfterClientEnd' in plan) info.state = 'frozen';
    });
    upstream.on('end', () => {
      if (live() && !client.destroyed) client.end();
    });
    client.on('error', (err) => {
      info.clientError ??= err.message;
    });
    upstream.on('error', (err) => {
      info.upstreamError ??= err.message;
      if (info.state === 'connecting') {
        // The server refused us (TLS or TCP): the client gets a reset.
        info.state = 'failed';
        resetSocket(rawClient);
        client.destroy();
      }
    });
    const onClose = (other: tls.TLSSocket, otherRaw: net.Socket) => (hadError: boolean) => {
      if (info.state === 'open' || info.state === 'connecting') {
        if (hadError) {
          resetSocket(otherRaw);
          other.destroy();
        } else if (!other.destroyed) {
          other.end();
        }
      }
      if (client.destroyed && upstream.destroyed && (info.state === 'open' || info.state === 'connecting')) info.state = 'closed';
    };
    client.on('close', onClose(upstream, rawUp));
    upstream.on('close', onClose(client, rawClient));
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
      for (const info of this.infos) if (info.state !== 'reset' && info.state !== 'failed') info.state = 'closed';
    });
    return this.closing;
  }
}

/** Starts a TLS MITM proxy on 127.0.0.1 (ephemeral port) in front of `target`. */
export async function startTlsProxy(opts: TlsProxyOptions): Promise<TlsProxy> {
  const p = new TlsMitmProxy(opts);
  await p.listen();
  return p;
}

/**
 * A tiny raw mTLS client that speaks NBKP frames byte by byte, to send what the real agent never
 * would, plus the frame-level steps the integration tests share (handshake, reading SACKs up to
 * the Final ACK, trailers).
 *
 * Not a test file itself (it has no tests); `node --test` may still load it, harmlessly.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Decoded } from '../../protocol/frames.js';
import {
  decodeAck,
  decodeHealthPong,
  decodeServerDataMessage,
  encodeHandshake,
  encodeHealthPing,
  encodeTrailer,
  type Ack,
  type HealthPong,
  type ServerDataMessage,
} from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { Waiters, withTimeout } from '../helpers/wait.js';

export const HOST = '127.0.0.1';

export interface RawOptions {
  port: number;
  ca: string;
  /** Client certificate / key file paths; omit both for a client with no certificate. */
  cert?: string;
  key?: string;
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
  /** Keep our side open after the server's end (a peer that goes on sending); the TLS socket takes it from the TCP one. */
  allowHalfOpen?: boolean;
  /** The loopback address to connect from (127.0.0.2 …: another peer as far as the server can tell). */
  localAddress?: string;
}

/**
 * One raw TLS connection. Everything received is appended to `received`; frames are read from
 * it with `read(decoder)`. Every wait is bounded.
 */
export class RawClient {
  readonly socket: tls.TLSSocket;
  /** The TCP socket under the TLS one (for reset: an RST, like a dying link). */
  readonly tcp: net.Socket;
  received: Buffer = Buffer.alloc(0);
  private consumed = 0;
  secure = false;
  secureAt = 0;
  ended = false;
  closed = false;
  closedAt = 0;
  error: Error | undefined;
  readonly startedAt = Date.now();
  private readonly waiters = new Waiters();

  constructor(o: RawOptions) {
    this.tcp = net.connect({ host: HOST, port: o.port, allowHalfOpen: o.allowHalfOpen, localAddress: o.localAddress });
    this.tcp.on('error', () => undefined); // reported through the TLS socket
    const opts: tls.ConnectionOptions = {
      socket: this.tcp,
      host: HOST,
      ca: readFileSync(o.ca),
      minVersion: o.minVersion ?? 'TLSv1.3',
      maxVersion: o.maxVersion,
      rejectUnauthorized: true,
    };
    if (o.cert) opts.cert = readFileSync(o.cert);
    if (o.key) opts.key = readFileSync(o.key);
    this.socket = tls.connect(opts);
    this.socket.on('secureConnect', () => {
      this.secure = true;
      this.secureAt = Date.now();
      this.waiters.notify();
    });
    this.socket.on('data', (c: Buffer) => {
      this.received = Buffer.concat([this.received, c]);
      this.waiters.notify();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.waiters.notify();
    });
    this.socket.on('error', (err) => {
      this.error ??= err;
      this.waiters.notify();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      this.waiters.notify();
    });
  }

  /** Resolves once pred() is true (re-checked on every socket event); rejects after timeoutMs with `what`. */
  waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return this.waiters.until(pred, timeoutMs, what, () => this.describe());
  }

  describe(): string {
    return (
      `secure=${this.secure} ended=${this.ended} closed=${this.closed} ` +
      `received=${this.received.length}B (${this.received.subarray(0, 64).toString('hex')}) ` +
      `error=${this.error ? this.error.message : 'none'}`
    );
  }

  /** Waits for the TLS handshake to complete (rejects if the connection fails first). */
  async connected(timeoutMs = 5000): Promise<void> {
    await this.waitUntil(() => this.secure || this.closed, timeoutMs, 'secureConnect');
    if (!this.secure) throw new Error(`TLS connection failed: ${this.describe()}`);
  }

  /** Reads the next frame; rejects if the connection closes first or after timeoutMs. */
  async read<T>(decode: (b: Buffer) => Decoded<T> | null, timeoutMs = 5000, what = 'frame'): Promise<T> {
    let out: Decoded<T> | null = null;
    await this.waitUntil(
      () => {
        out = decode(this.received.subarray(this.consumed));
        return out !== null || this.closed;
      },
      timeoutMs,
      what,
    );
    const got = out as Decoded<T> | null;
    if (!got) throw new Error(`connection closed before a complete ${what}; ${this.describe()}`);
    this.consumed += got.size;
    return got.value;
  }

  /** Bytes received and not yet consumed by read(). */
  get unread(): Buffer {
    return this.received.subarray(this.consumed);
  }

  write(data: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Writes `data` and resolves once it is handed to the kernel (bounded). */
  writeFlushed(data: Buffer, timeoutMs = 10_000): Promise<void> {
    const written = new Promise<void>((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
    });
    return withTimeout(written, timeoutMs, `the write of ${data.length} bytes to be flushed; ${this.describe()}`);
  }

  /** Resolves once the socket is fully closed; rejects after timeoutMs. */
  async waitClosed(timeoutMs: number): Promise<void> {
    await this.waitUntil(() => this.closed, timeoutMs, 'the connection to close');
  }

  destroy(): void {
    this.socket.destroy();
    this.tcp.destroy();
  }

  /** Kills the connection with a TCP RST (no close_notify, no FIN). */
  reset(): void {
    if (!this.tcp.destroyed) this.tcp.resetAndDestroy();
    this.socket.destroy();
  }
}

export function rawConnect(o: RawOptions): RawClient {
  return new RawClient(o);
}

/** A raw connection presenting `as`'s certificate (null: no certificate at all); `o` overrides. */
export function rawAgent(port: number, pki: Pki, as: string | null = 'agent-a', o: Partial<RawOptions> = {}): RawClient {
  const pair = as === null ? undefined : pki.agents[as];
  return rawConnect({ port, ca: pki.caCert, cert: pair?.cert, key: pair?.key, ...o });
}

/** A raw PING health check with a valid certificate; resolves with the pong. */
export async function rawHealth(port: number, pki: Pki, agent = 'agent-a'): Promise<HealthPong> {
  const c = rawAgent(port, pki, agent);
  try {
    await c.connected();
    c.write(encodeHealthPing());
    return await c.read(decodeHealthPong, 5000, 'health answer');
  } finally {
    c.destroy();
  }
}

export interface HandshakeSpec {
  agent: string;
  storage?: string;
  backup?: string;
  version?: number;
  /** Version 3's format line (default gzip). */
  format?: string;
}

/** Waits for TLS, sends an NBKP handshake (storage "main", backup "app" unless given) and reads the ACK. */
export async function rawHandshake(c: RawClient, hs: HandshakeSpec): Promise<Ack> {
  await c.connected();
  c.write(encodeHandshake({ agent: hs.agent, storage: hs.storage ?? 'main', backup: hs.backup ?? 'app', version: hs.version, format: hs.format }));
  return c.read(decodeAck, 5000, 'ACK');
}

/** The complete server data messages (SACKs, Final ACK) in `buf`, without consuming anything. */
export function parseServerMessages(buf: Buffer): ServerDataMessage[] {
  const out: ServerDataMessage[] = [];
  // Bounded by the buffer: every message decoded consumes bytes.
  for (let at = 0; at < buf.length; ) {
    const d = decodeServerDataMessage(buf.subarray(at));
    if (!d) break;
    out.push(d.value);
    at += d.size;
  }
  return out;
}

export interface ReadFinalOptions {
  /** At most this many messages are read (default 10 000). */
  maxMessages?: number;
  /** Bound for each message (default 15 000 ms). */
  timeoutMs?: number;
  /** A connection that closed with an error also counts as closed without a Final ACK. */
  errorMeansNoFinal?: boolean;
}

/**
 * Reads SACKs until the Final ACK. `final` is null when the server closed the connection without
 * one (cleanly, unless errorMeansNoFinal) and nothing unread is left.
 */
export async function readUntilFinal(c: RawClient, o: ReadFinalOptions = {}): Promise<{ sacks: number[]; final: number | null }> {
  const maxMessages = o.maxMessages ?? 10_000;
  const sacks: number[] = [];
  for (let i = 0; i < maxMessages; i++) {
    let m: ServerDataMessage;
    try {
      m = await c.read(decodeServerDataMessage, o.timeoutMs ?? 15_000, `SACK or Final ACK (after ${sacks.length} SACKs)`);
    } catch (err) {
      if (c.closed && c.unread.length === 0 && (o.errorMeansNoFinal || !c.error)) return { sacks, final: null };
      throw err;
    }
    if (m.type === 'final') return { sacks, final: m.status };
    sacks.push(m.offset);
  }
  throw new Error(`no Final ACK within ${maxMessages} messages`);
}

export function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

/** The 44-byte trailer for `data`; `sha` / `size` override the true values. */
export function trailerFor(data: Buffer, o: { sha?: Buffer; size?: number } = {}): Buffer {
  return encodeTrailer({ sha256: o.sha ?? sha256(data), size: o.size ?? data.length });
}

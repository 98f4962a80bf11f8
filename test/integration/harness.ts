/**
 * Shared set-up for the integration tests: config writers for the real CLIs and a tiny raw mTLS
 * client that speaks NBKP frames byte by byte (to send what the real agent never would).
 *
 * Not a test file itself (it has no tests); `node --test` may still load it, harmlessly.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import type { Decoded } from '../../protocol/frames.js';
import { decodeHealthPong, encodeHealthPing, type HealthPong } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { writeYaml } from '../helpers/proc.js';

export const HOST = '127.0.0.1';

export interface StorageSpec {
  base_dir: string;
  max_backups?: number;
  min_free?: string | number;
}

/** Writes a server.yaml listening on 127.0.0.1:0 with a 2 s handshake timeout. */
export async function writeServerConfig(
  path: string,
  pki: Pki,
  storages: Record<string, StorageSpec>,
  server: Record<string, unknown> = {},
): Promise<void> {
  await writeYaml(path, {
    server: { listen: `${HOST}:0`, handshake_timeout: '2s', idle_timeout: '10s', ...server },
    tls: { ca_cert: pki.caCert, server_cert: pki.serverCert, server_key: pki.serverKey },
    storages: Object.fromEntries(
      Object.entries(storages).map(([name, s]) => [name, { max_backups: 5, min_free: 0, ...s }]),
    ),
    logging: { level: 'info', format: 'json' },
  });
}

export interface EntrySpec {
  name: string;
  storage: string;
  sources: string[];
  exclude?: string[];
}

/** An agent.yaml as a plain object (tests may tweak it before writing). */
export function agentConfigObject(
  pki: Pki,
  agentName: string,
  port: number,
  entries: EntrySpec[],
  opts: { certOf?: string } = {},
): Record<string, unknown> {
  const pair = pki.agents[opts.certOf ?? agentName];
  if (!pair) throw new Error(`no certificate for ${opts.certOf ?? agentName}`);
  return {
    agent: { name: agentName },
    server: { address: `${HOST}:${port}` },
    tls: { ca_cert: pki.caCert, client_cert: pair.cert, client_key: pair.key },
    backups: entries.map((e) => ({
      name: e.name,
      storage: e.storage,
      schedule: '0 2 * * *',
      sources: e.sources.map((path) => ({ path })),
      exclude: e.exclude ?? [],
    })),
    retry: { max_attempts: 1, connect_timeout: '5s', read_timeout: '15s' },
    resume: { buffer_size: '16mb', chunk_size: '1mb' },
    logging: { level: 'info', format: 'json' },
    daemon: { control_channel: { enabled: false } },
  };
}

export async function writeAgentConfig(
  path: string,
  pki: Pki,
  agentName: string,
  port: number,
  entries: EntrySpec[],
  opts: { certOf?: string } = {},
): Promise<void> {
  await writeYaml(path, agentConfigObject(pki, agentName, port, entries, opts));
}

// ─── Raw client ─────────────────────────────────────────────────────────────────────────────

export interface RawOptions {
  port: number;
  ca: string;
  /** Client certificate / key file paths; omit both for a client with no certificate. */
  cert?: string;
  key?: string;
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
}

export interface CloseInfo {
  /** ms from the start of waitClosed's caller-chosen origin (see RawClient.closedAt). */
  at: number;
  hadError: boolean;
  error?: Error;
}

/**
 * One raw TLS connection. Everything received is appended to `received`; frames are read from
 * it with `read(decoder)`. Every wait is bounded.
 */
export class RawClient {
  readonly socket: tls.TLSSocket;
  /** The TCP socket under the TLS one (for resetAndDestroy: an RST, like a dying link). */
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
  private waiters = new Set<() => void>();

  constructor(o: RawOptions) {
    this.tcp = net.connect({ host: HOST, port: o.port });
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
      this.notify();
    });
    this.socket.on('data', (c: Buffer) => {
      this.received = Buffer.concat([this.received, c]);
      this.notify();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    this.socket.on('error', (err) => {
      this.error ??= err;
      this.notify();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      this.notify();
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once pred() is true; rejects after timeoutMs with `what`. */
  waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        let ok: boolean;
        try {
          ok = pred();
        } catch (err) {
          clearTimeout(timer);
          this.waiters.delete(check);
          reject(err);
          return;
        }
        if (ok) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.describe()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
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

/** A raw PING health check with a valid certificate; resolves with the pong. */
export async function rawHealth(port: number, pki: Pki, agent = 'agent-a'): Promise<HealthPong> {
  const c = rawConnect({ port, ca: pki.caCert, cert: pki.agents[agent].cert, key: pki.agents[agent].key });
  try {
    await c.connected();
    c.write(encodeHealthPing());
    return await c.read(decodeHealthPong, 5000, 'health answer');
  } finally {
    c.destroy();
  }
}

/** Every file under `dir` (relative paths), recursively; [] if `dir` does not exist. */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (abs: string, rel: string): Promise<void> => {
    let ents;
    try {
      ents = await readdir(abs, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of ents) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await visit(join(abs, e.name), r);
      else out.push(r);
    }
  };
  await visit(dir, '');
  return out.sort();
}

/** Committed backups (`<timestamp>.tar.gz`) in a directory, sorted by name (= by time). */
export async function committedBackups(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.filter((n) => /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}\.tar\.gz$/.test(n)).sort();
}

/** Polls `pred` every 25 ms until true or timeoutMs; returns its last value. */
export async function pollUntil(pred: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

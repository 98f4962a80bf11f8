import crypto from 'node:crypto';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { AckStatus, FinalStatus, HealthStatus, isSupportedVersion } from '../../protocol/constants.js';
import {
  decodeClientHello,
  decodeMode,
  encodeAck,
  encodeFinalAck,
  encodeHealthPong,
  encodeSack,
  type Handshake,
} from '../../protocol/frames.js';
import { nameProblem } from '../../protocol/names.js';
import type { ServerConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket } from '../net/frame-socket.js';
import { loadTlsMaterial, serverTlsOptions } from '../tls/material.js';
import { BodyReceiver } from './body-receiver.js';
import { Storage } from './storage.js';

/**
 * The listener: accepts mTLS connections, reads the 4-byte magic that says what a connection is
 * within the handshake deadline, and serves it. A malformed or hostile connection is closed and
 * logged; it never affects any other connection.
 */
const SACK_EVERY = 1024 * 1024;

interface ActiveSession {
  id: string;
  key: string;
  agent: string;
  storage: string;
  backup: string;
  startedAt: number;
}

export class BackupServer {
  private readonly server: tls.Server;
  private readonly storages = new Map<string, Storage>();
  private readonly active = new Map<string, ActiveSession>();
  private readonly sockets = new Set<tls.TLSSocket>();

  constructor(
    private readonly config: ServerConfig,
    private readonly log: Logger,
  ) {
    const material = loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.server_cert, key: config.tls.server_key });
    for (const [name, sc] of Object.entries(config.storages)) this.storages.set(name, new Storage(name, sc));
    this.server = tls.createServer({
      ...serverTlsOptions(material),
      allowHalfOpen: true,
      handshakeTimeout: config.server.handshake_timeout,
    });
    this.server.on('secureConnection', (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err, socket) => {
      this.log.warn({ remote: socket.remoteAddress, err: err.message }, 'TLS handshake refused');
    });
  }

  /** Removes temporary files no live session owns, then listens. Resolves with the bound port. */
  async start(): Promise<number> {
    for (const storage of this.storages.values()) {
      for (const tmp of await storage.tempFiles()) {
        await fs.promises.rm(tmp, { force: true });
        this.log.info({ file: tmp, storage: storage.name }, 'removed orphan temporary file');
      }
    }
    const { host, port } = this.config.server;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const bound = (this.server.address() as AddressInfo).port;
    this.log.info({ host, port: bound, storages: [...this.storages.keys()] }, 'listening');
    return bound;
  }

  /** Stops accepting; closes open connections after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const timer = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }

  private accept(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {
      /* reported where the connection is served */
    });
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.serve(socket, remote).catch((err) => {
      this.log.warn({ remote, err: errorMessage(err) }, 'connection closed');
      socket.destroy();
    });
  }

  private async serve(socket: tls.TLSSocket, remote: string): Promise<void> {
    const frames = new FrameSocket(socket);
    const hello = await frames.read(decodeClientHello, this.config.server.handshake_timeout, 'handshake');
    switch (hello.kind) {
      case 'NBKP':
        return this.serveBackup(socket, frames, hello.value, remote);
      case 'PING':
        return this.serveHealth(socket);
      default:
        throw new NbackupError('protocol', `connection kind ${hello.kind} is not served by this server version`);
    }
  }

  private async serveHealth(socket: tls.TLSSocket): Promise<void> {
    let free = Number.MAX_SAFE_INTEGER;
    let low = false;
    for (const s of this.storages.values()) {
      const f = await s.freeBytes();
      free = Math.min(free, f);
      if (f < s.config.min_free) low = true;
    }
    const status = low ? HealthStatus.LOW_DISK : this.active.size > 0 ? HealthStatus.BUSY : HealthStatus.READY;
    socket.end(encodeHealthPong({ status, freeBytes: free }));
  }

  /** Checks a handshake; returns the storage, or answers the refusal and returns null. */
  private async admit(socket: tls.TLSSocket, hs: Handshake, remote: string): Promise<Storage | null> {
    const refuse = (status: AckStatus, message: string): null => {
      this.log.warn({ remote, agent: hs.agent, storage: hs.storage, backup: hs.backup, status, reason: message }, 'session refused');
      socket.end(encodeAck({ status, message, sessionId: '' }));
      return null;
    };
    if (!isSupportedVersion(hs.version)) return refuse(AckStatus.REJECT, `unsupported protocol version ${hs.version}`);
    for (const [what, value] of [
      ['agent', hs.agent],
      ['storage', hs.storage],
      ['backup', hs.backup],
    ] as const) {
      const problem = nameProblem(value);
      if (problem) return refuse(AckStatus.REJECT, `${what} name ${problem}`);
    }
    const cn = socket.getPeerCertificate()?.subject?.CN;
    const certName = Array.isArray(cn) ? cn[0] : cn;
    if (certName !== hs.agent) {
      return refuse(AckStatus.REJECT, `agent name "${hs.agent}" does not match certificate CN "${certName ?? ''}"`);
    }
    const storage = this.storages.get(hs.storage);
    if (!storage) return refuse(AckStatus.STORAGE_NOT_FOUND, `storage "${hs.storage}" is not configured`);
    const key = `${hs.agent}:${hs.storage}:${hs.backup}`;
    if (this.active.has(key)) return refuse(AckStatus.BUSY, `a backup of ${key} is already running`);
    const free = await storage.freeBytes();
    if (free < storage.config.min_free) {
      return refuse(AckStatus.FULL, `storage "${storage.name}" has ${free} bytes free, below its reserve of ${storage.config.min_free}`);
    }
    return storage;
  }

  private async serveBackup(socket: tls.TLSSocket, frames: FrameSocket, hs: Handshake, remote: string): Promise<void> {
    const storage = await this.admit(socket, hs, remote);
    if (!storage) return;
    const key = `${hs.agent}:${hs.storage}:${hs.backup}`;
    // Re-checked after the await in admit(): two handshakes may have raced.
    if (this.active.has(key)) {
      socket.end(encodeAck({ status: AckStatus.BUSY, message: `a backup of ${key} is already running`, sessionId: '' }));
      return;
    }
    const session: ActiveSession = {
      id: crypto.randomUUID(),
      key,
      agent: hs.agent,
      storage: hs.storage,
      backup: hs.backup,
      startedAt: Date.now(),
    };
    this.active.set(key, session);
    const ctx = { session: session.id, agent: hs.agent, storage: hs.storage, backup: hs.backup, remote };
    let temp: { path: string; fd: number } | null = null;
    let committed = false;
    try {
      temp = await storage.createTemp(hs.agent, hs.backup, session.id);
      socket.write(encodeAck({ status: AckStatus.GO, message: '', sessionId: session.id }));
      this.log.info(ctx, 'session started');
      const mode = await frames.read(decodeMode, this.config.server.handshake_timeout, 'stream mode');
      if (mode.kind !== 'single') throw new NbackupError('protocol', 'parallel sessions are not served by this server version');

      const result = await this.receiveBody(socket, frames, temp.fd);
      if (result === 'write-error') {
        socket.end(encodeFinalAck({ status: FinalStatus.WRITE_ERROR }));
        this.log.error(ctx, 'session failed: write error');
        return;
      }
      const verdict = result.verify();
      if (!verdict.ok) {
        socket.end(encodeFinalAck({ status: FinalStatus.CHECKSUM_MISMATCH }));
        this.log.error({ ...ctx, reason: verdict.reason, bytes: result.received }, 'session failed: checksum mismatch, temporary file discarded');
        return;
      }
      const { file, removed } = await storage.commit(temp.path, temp.fd, verdict.dataSize);
      committed = true;
      socket.end(encodeFinalAck({ status: FinalStatus.OK }));
      const seconds = (Date.now() - session.startedAt) / 1000;
      this.log.info(
        {
          ...ctx,
          file,
          bytes: verdict.dataSize,
          sha256: verdict.sha256,
          durationS: Number(seconds.toFixed(3)),
          mbPerS: Number((verdict.dataSize / 1048576 / Math.max(seconds, 0.001)).toFixed(1)),
          rotated: removed,
        },
        'session committed',
      );
    } catch (err) {
      this.log.error({ ...ctx, err: errorMessage(err) }, 'session failed');
      if (!socket.destroyed && socket.writable) {
        // A write error on our side is worth telling the agent; anything else just closes.
        if (err instanceof NbackupError && err.kind === 'storage') socket.end(encodeFinalAck({ status: FinalStatus.WRITE_ERROR }));
        else socket.destroy();
      }
    } finally {
      this.active.delete(key);
      if (temp && !committed) {
        await closeQuietly(temp.fd);
        await fs.promises.rm(temp.path, { force: true });
      }
    }
  }

  /**
   * Streams the body into the temporary file until the agent half-closes. Returns the receiver for
   * verification, or 'write-error' when the disk failed.
   */
  private receiveBody(socket: tls.TLSSocket, frames: FrameSocket, fd: number): Promise<BodyReceiver | 'write-error'> {
    return new Promise((resolve, reject) => {
      let lastSack = 0;
      const receiver = new BodyReceiver(fd, {
        onWritten: (written) => {
          if (written - lastSack >= SACK_EVERY && socket.writable) {
            lastSack = written;
            socket.write(encodeSack({ offset: written }));
          }
        },
      });
      const idle = this.config.server.idle_timeout;
      socket.setTimeout(idle);
      const finish = (fn: () => void): void => {
        socket.setTimeout(0);
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('close', onClose);
        socket.off('timeout', onTimeout);
        fn();
      };
      const onData = (chunk: Buffer): void => {
        receiver.push(chunk);
        if (receiver.congested) {
          socket.pause();
          void receiver.drained().then(() => socket.resume());
        }
      };
      const onEnd = (): void => {
        finish(() => {
          receiver.flushed().then(
            () => resolve(receiver),
            () => resolve('write-error'),
          );
        });
      };
      const onClose = (): void => finish(() => reject(new NbackupError('network', `connection lost after ${receiver.received} body bytes`)));
      const onTimeout = (): void =>
        finish(() => {
          socket.destroy();
          reject(new NbackupError('timeout', `no data for ${Math.round(idle / 1000)}s after ${receiver.received} body bytes`));
        });
      socket.on('data', onData);
      socket.on('end', onEnd);
      socket.on('close', onClose);
      socket.on('timeout', onTimeout);
      const early = frames.detach();
      if (early.length > 0) onData(early);
    });
  }
}

function closeQuietly(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()));
}

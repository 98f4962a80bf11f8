import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { decodeClientHello } from '../../protocol/frames.js';
import type { ServerConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { FrameSocket } from '../net/frame-socket.js';
import { daysUntil, loadTlsMaterial, serverTlsOptions, type TlsMaterial } from '../tls/material.js';
import { adoptSessions } from './adoption.js';
import { serveAbort } from './connections/abort.js';
import { serveBackup } from './connections/backup.js';
import { serveControl } from './connections/control.js';
import { serveHealth, serveHealthReport } from './connections/health.js';
import { serveIndexPut } from './connections/index-put.js';
import { serveJoin } from './connections/join.js';
import { serveList } from './connections/list.js';
import { serveRead } from './connections/read.js';
import { serveResume } from './connections/resume.js';
import type { Connection, ServerContext } from './context.js';
import { ConnectionLimits } from './connection-limits.js';
import { AdmissionGate } from './control/admission-gate.js';
import { ControlHub } from './control/control-hub.js';
import { FlowRotator } from './control/flow-rotator.js';
import { startMetricsHttp } from './metrics/metrics-http.js';
import { ServerMetrics } from './metrics/server-metrics.js';
import { VerifySchedule } from './verify-schedule.js';
import { SessionRegistry } from './registry.js';
import { Storage } from './storage.js';
import { OddEntries, OddEntryError, removeFileEntry } from './storage-entries.js';

/**
 * The listener: accepts mTLS connections, reads the first frame (whose magic says what the
 * connection is) within the handshake deadline, and hands the connection to the handler of its
 * kind in connections/. A malformed or hostile connection is closed and logged; it never affects
 * any other connection.
 */
export class BackupServer {
  private readonly server: tls.Server;
  private readonly ctx: ServerContext;
  private readonly sockets = new Set<tls.TLSSocket>();
  /** The handlers of open connections, so that stop() can let them finish. */
  private readonly serving = new Set<Promise<void>>();
  private readonly material: TlsMaterial;
  private readonly limits: ConnectionLimits;
  private metricsHttp: { port: number; close: () => Promise<void> } | null = null;
  /** Flow rotation of parallel streams (server.flow_rotation; rotateNow by hand). */
  readonly rotator: FlowRotator;
  /** server.verify.schedule, when set. */
  private readonly verifier: VerifySchedule | null;

  constructor(config: ServerConfig, log: Logger) {
    const material = loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.server_cert, key: config.tls.server_key });
    const storages = new Map<string, Storage>();
    for (const [name, sc] of Object.entries(config.storages)) storages.set(name, new Storage(name, sc));
    const registry = new SessionRegistry(log, config.server.session_ttl);
    const control = new ControlHub(log);
    const gate = new AdmissionGate(config.server.max_concurrent_sessions, control, log);
    // A session that is discarded or loses its connection no longer holds an admission slot.
    registry.onRelease = (key) => gate.leave(key);
    const metrics = new ServerMetrics({ activeSessions: () => registry.live().length, storages, notAfter: material.notAfter });
    registry.onDiscard = (result) => metrics.ended(result);
    this.material = material;
    this.ctx = { config, log, storages, registry, control, gate, metrics };
    this.rotator = new FlowRotator(config.server.flow_rotation, registry, control, log);
    const schedule = config.server.verify.schedule;
    this.verifier = schedule ? new VerifySchedule(schedule, storages, metrics, log) : null;
    this.server = tls.createServer({
      ...serverTlsOptions(material),
      allowHalfOpen: true,
      // Replies are small frames written right after other small writes (TLS 1.3 session
      // tickets, a SACK): with Nagle on, each waits for the agent's delayed ACK (~40 ms).
      noDelay: true,
      handshakeTimeout: config.server.handshake_timeout,
    });
    this.limits = new ConnectionLimits(config.server, log, metrics);
    this.limits.attach(this.server);
    this.server.on('secureConnection', (socket) => this.accept(socket));
  }

  /**
   * Checks every storage can be written, takes up the sessions the previous server left (if still
   * within their TTL), removes every other temporary file, then listens. Resolves with the bound port.
   */
  async start(): Promise<number> {
    const { config, log, storages } = this.ctx;
    for (const storage of storages.values()) await storage.check();
    const adopted = await adoptSessions(this.ctx);
    for (const storage of storages.values()) {
      const odd = new OddEntries();
      for (const tmp of await storage.tempFiles(odd)) {
        if (adopted.has(tmp)) continue;
        try {
          if (await removeFileEntry(tmp)) log.info({ file: tmp, storage: storage.name }, 'removed orphan temporary file');
        } catch (err) {
          // What the server cannot remove does not keep it from starting.
          if (err instanceof OddEntryError) odd.addError(err);
          else log.warn({ file: tmp, storage: storage.name, err: errorMessage(err) }, 'an orphan temporary file cannot be removed');
        }
      }
      if (odd.count > 0) log.warn({ storage: storage.name, ...odd.fields() }, 'the storage holds what the server did not make (symlinks, folders, FIFOs under its names); left alone');
    }
    const { host, port } = config.server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new NbackupError('network', `cannot listen on ${config.server.listen}: ${err.message}`, { cause: err }));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const bound = (this.server.address() as AddressInfo).port;
    this.rotator.start();
    this.verifier?.start();
    log.info({ host, port: bound, storages: [...storages.keys()] }, 'listening');
    this.logCertificateDays();
    if (config.server.metrics.enabled) {
      this.metricsHttp = await startMetricsHttp(config.server.metrics.listen, this.ctx.metrics, storages, log);
    }
    return bound;
  }

  /** The port of the metrics listener, when it runs. */
  get metricsPort(): number | null {
    return this.metricsHttp?.port ?? null;
  }

  /** Days until the server's and the CA's certificates expire: info, or a warning within 30 days. */
  private logCertificateDays(): void {
    const { cert, ca } = this.material.notAfter;
    const fields = { serverCertDays: daysUntil(cert), caCertDays: daysUntil(ca), serverCertNotAfter: cert.toISOString(), caCertNotAfter: ca.toISOString() };
    if (Math.min(fields.serverCertDays, fields.caCertDays) < 30) this.ctx.log.warn(fields, 'a certificate expires within 30 days; issue a new one (nbackup-server pki)');
    else this.ctx.log.info(fields, 'certificates valid');
  }

  /**
   * Stops accepting and closes every connection: the sessions they fed stay on disk and the next
   * start takes them up (adoption.ts). Waits, at most `graceMs`, for the handlers to finish what
   * they were doing, so that a commit under way completes.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.rotator.stop();
    this.verifier?.stop();
    await this.metricsHttp?.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.allSettled([closed, ...this.serving]), bound]);
    clearTimeout(timer);
  }

  private accept(socket: tls.TLSSocket): void {
    if (!this.limits.admit(socket)) return;
    this.sockets.add(socket);
    this.ctx.metrics.track(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {
      /* reported where the connection is served */
    });
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const handled = this.serve(socket, remote).then(
      () => closeAfterAnswer(socket, this.ctx.config.server.handshake_timeout),
      (err: unknown) => {
        this.ctx.log.warn({ remote, err: errorMessage(err) }, 'connection closed');
        socket.destroy();
      },
    );
    this.serving.add(handled);
    void handled.finally(() => this.serving.delete(handled));
  }

  private async serve(socket: tls.TLSSocket, remote: string): Promise<void> {
    const frames = new FrameSocket(socket);
    const hello = await frames.read(decodeClientHello, this.ctx.config.server.handshake_timeout, 'handshake');
    const version = 'version' in hello.value ? hello.value.version : 0;
    const conn: Connection = { socket, frames, remote, version };
    switch (hello.kind) {
      case 'NBKP':
        return serveBackup(this.ctx, conn, hello.value);
      case 'RSME':
        return serveResume(this.ctx, conn, hello.value);
      case 'PJIN':
        return serveJoin(this.ctx, conn, hello.value);
      case 'PING':
        return serveHealth(this.ctx, conn);
      case 'HLTH':
        return serveHealthReport(this.ctx, conn);
      case 'LIST':
        return serveList(this.ctx, conn, hello.value);
      case 'READ':
        return serveRead(this.ctx, conn, hello.value);
      case 'IDXP':
        return serveIndexPut(this.ctx, conn, hello.value);
      case 'ABRT':
        return serveAbort(this.ctx, conn, hello.value);
      case 'CTRL':
        return serveControl(this.ctx, conn, hello.value);
    }
  }
}

/**
 * A handler is done with its connection: the answer is on its way, and nothing more is read. A
 * well-behaved peer closes its side once it has the answer (then the socket goes by itself); one
 * that keeps the connection open, or goes on sending, is cut off after `lingerMs`, so finished
 * connections cannot pile up.
 */
function closeAfterAnswer(socket: tls.TLSSocket, lingerMs: number): void {
  if (socket.destroyed) return;
  socket.end();
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

import type tls from 'node:tls';
import client from 'prom-client';
import { daysUntil } from '../../tls/material.js';
import type { Storage } from '../storage.js';

/**
 * What the server exports on `/metrics` (metrics-http.ts), in Prometheus' terms. The counters move
 * where things happen (registry.ts, commit.ts, resume and join); gauges that describe the present
 * (active sessions, free space, certificate days) are read at scrape time.
 *
 * What operators alert on is `nbackup_last_backup_timestamp_seconds` per agent/storage/backup:
 * "no committed backup of X for more than a day" is `time() - that > 86400`.
 */
export type SessionResult = 'committed' | 'checksum_mismatch' | 'no_space' | 'write_error' | 'aborted' | 'expired' | 'superseded' | 'failed';

/** Why a connection was closed unserved (connection-limits.ts). */
export type RefusalReason = 'max_connections' | 'max_handshakes_per_address' | 'max_connections_per_agent' | 'tls_handshake';

/** What identifies a backup in the per-backup series. */
export interface BackupLabels {
  agent: string;
  storage: string;
  backup: string;
}

export interface MetricsSources {
  /** Sessions being received or waiting for a resume. */
  activeSessions: () => number;
  storages: ReadonlyMap<string, Storage>;
  notAfter: { cert: Date; ca: Date };
}

export class ServerMetrics {
  readonly registry = new client.Registry();
  private readonly sessions: client.Counter<'result'>;
  private readonly resumes: client.Counter;
  private readonly rejoins: client.Counter;
  private readonly duration: client.Histogram<'storage'>;
  private readonly committedBytes: client.Counter<'storage'>;
  private readonly lastTime: client.Gauge<keyof BackupLabels>;
  private readonly lastSize: client.Gauge<keyof BackupLabels>;
  private readonly lastDuration: client.Gauge<keyof BackupLabels>;
  private readonly refusals: client.Counter<'reason'>;
  private readonly verifyRuns: client.Counter;
  private readonly verifyLast: client.Gauge;
  private readonly verifyDuration: client.Gauge;
  private readonly verifyArchives: client.Gauge<'storage' | 'result'>;
  private readonly verifyBad: client.Gauge<'storage' | 'archive'>;
  /** Bytes read from connections that have closed; live ones are added at scrape time. */
  private closedBytes = 0;
  private readonly live = new Set<tls.TLSSocket>();

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'nbackup_server_' });
    // A counter read from the sockets at scrape time: it only grows, as bytesRead does.
    const received = (): number => {
      let n = this.closedBytes;
      for (const s of this.live) n += s.bytesRead;
      return n;
    };
    new client.Counter({
      name: 'nbackup_received_bytes_total',
      help: 'Bytes received from agents over every connection (after TLS)',
      registers,
      collect() {
        this.reset();
        this.inc(received());
      },
    });
    this.sessions = new client.Counter({ name: 'nbackup_sessions_total', help: 'Backup sessions ended, by result', labelNames: ['result'], registers });
    this.refusals = new client.Counter({ name: 'nbackup_connections_refused_total', help: 'Connections closed unserved: over a connection limit, or a failed TLS handshake', labelNames: ['reason'], registers });
    this.resumes = new client.Counter({ name: 'nbackup_resumes_total', help: 'Single-stream sessions resumed after a broken connection', registers });
    this.rejoins = new client.Counter({ name: 'nbackup_stream_rejoins_total', help: 'Parallel streams that joined their session again', registers });
    this.duration = new client.Histogram({
      name: 'nbackup_backup_duration_seconds',
      help: 'Time from a session\'s start to its commit',
      labelNames: ['storage'],
      buckets: [1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600],
      registers,
    });
    this.committedBytes = new client.Counter({ name: 'nbackup_committed_bytes_total', help: 'Archive bytes committed', labelNames: ['storage'], registers });
    const labelNames = ['agent', 'storage', 'backup'] as const;
    this.lastTime = new client.Gauge({ name: 'nbackup_last_backup_timestamp_seconds', help: 'When the last backup was committed (Unix time)', labelNames, registers });
    this.lastSize = new client.Gauge({ name: 'nbackup_last_backup_size_bytes', help: 'Size of the last committed archive', labelNames, registers });
    this.lastDuration = new client.Gauge({ name: 'nbackup_last_backup_duration_seconds', help: 'How long the last committed backup took', labelNames, registers });
    this.verifyRuns = new client.Counter({ name: 'nbackup_verify_runs_total', help: 'Scheduled verify runs completed (server.verify.schedule)', registers });
    this.verifyLast = new client.Gauge({ name: 'nbackup_verify_last_run_timestamp_seconds', help: 'When the last scheduled verify run ended (Unix time)', registers });
    this.verifyDuration = new client.Gauge({ name: 'nbackup_verify_last_run_duration_seconds', help: 'How long the last scheduled verify run took', registers });
    this.verifyArchives = new client.Gauge({
      name: 'nbackup_verify_archives',
      help: 'Archives the last scheduled verify run found good (result="ok") and bad (result="bad"), per storage',
      labelNames: ['storage', 'result'],
      registers,
    });
    this.verifyBad = new client.Gauge({
      name: 'nbackup_verify_bad_archive',
      help: 'Set to 1 for each archive the last scheduled verify run found bad (path under the storage)',
      labelNames: ['storage', 'archive'],
      registers,
    });
    new client.Gauge({
      name: 'nbackup_active_sessions',
      help: 'Sessions being received or kept for a resume',
      registers,
      collect() {
        this.set(sources.activeSessions());
      },
    });
    new client.Gauge({
      name: 'nbackup_storage_free_bytes',
      help: 'Free space for unprivileged users on each storage\'s filesystem (NaN when it cannot be read)',
      labelNames: ['storage'],
      registers,
      async collect() {
        for (const s of sources.storages.values()) {
          this.set({ storage: s.name }, await s.freeBytes().catch(() => Number.NaN));
        }
      },
    });
    new client.Gauge({
      name: 'nbackup_storage_min_free_bytes',
      help: 'The reserve (min_free) each storage keeps',
      labelNames: ['storage'],
      registers,
      collect() {
        for (const s of sources.storages.values()) this.set({ storage: s.name }, s.config.min_free);
      },
    });
    new client.Gauge({
      name: 'nbackup_certificate_expiry_days',
      help: 'Whole days until the server\'s certificate and its CA\'s expire',
      labelNames: ['certificate'],
      registers,
      collect() {
        this.set({ certificate: 'server' }, daysUntil(sources.notAfter.cert));
        this.set({ certificate: 'ca' }, daysUntil(sources.notAfter.ca));
      },
    });
  }

  /** Counts the bytes of an accepted connection. */
  track(socket: tls.TLSSocket): void {
    this.live.add(socket);
    socket.once('close', () => {
      this.live.delete(socket);
      this.closedBytes += socket.bytesRead;
    });
  }

  refused(reason: RefusalReason): void {
    this.refusals.inc({ reason });
  }

  ended(result: SessionResult): void {
    this.sessions.inc({ result });
  }

  committed(labels: BackupLabels, size: number, seconds: number, at = Date.now()): void {
    this.ended('committed');
    this.duration.observe({ storage: labels.storage }, seconds);
    this.committedBytes.inc({ storage: labels.storage }, size);
    this.lastTime.set({ ...labels }, Math.floor(at / 1000));
    this.lastSize.set({ ...labels }, size);
    this.lastDuration.set({ ...labels }, seconds);
  }

  /** The results of one scheduled verify run, replacing the last one's. */
  verified(run: { storages: readonly string[]; ok: Map<string, number>; bad: { storage: string; archive: string }[]; seconds: number; at?: number }): void {
    this.verifyRuns.inc();
    this.verifyLast.set(Math.floor((run.at ?? Date.now()) / 1000));
    this.verifyDuration.set(run.seconds);
    this.verifyArchives.reset();
    this.verifyBad.reset();
    for (const storage of run.storages) {
      this.verifyArchives.set({ storage, result: 'ok' }, run.ok.get(storage) ?? 0);
      this.verifyArchives.set({ storage, result: 'bad' }, run.bad.filter((b) => b.storage === storage).length);
    }
    for (const b of run.bad) this.verifyBad.set(b, 1);
  }

  resumed(): void {
    this.resumes.inc();
  }

  rejoined(): void {
    this.rejoins.inc();
  }
}

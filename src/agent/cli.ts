import { loadAgentConfig, parseHostPort, type AgentConfig, type BackupConfig } from '../config/index.js';
import { NbackupError, asNbackupError, errorMessage } from '../errors.js';
import { EXIT_BACKUP_FAILED } from '../exit-codes.js';
import { createLogger, flushLogs, type Logger } from '../log/logger.js';
import { loadTlsMaterial, type TlsMaterial } from '../tls/material.js';
import { runBackup } from './backup-job.js';
import { NATIVE_PACKAGES, nativeCodecProblem } from './pipeline/codecs.js';
import { checkHealth, describeHealth } from './health.js';
import { ProgressReporter } from './progress.js';
import { runLimit } from './run-limit.js';
import { Scheduler } from './scheduler.js';

/** What the nbackup-agent command does; cmd/ only parses arguments and calls these. */

function stderrLine(line: string): void {
  process.stderr.write(`nbackup-agent: ${line}\n`);
}

function loadMaterial(config: AgentConfig): TlsMaterial {
  return loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.client_cert, key: config.tls.client_key });
}

async function setup(configPath: string): Promise<{ config: AgentConfig; material: TlsMaterial; log: Logger }> {
  const config = await loadAgentConfig(configPath);
  const material = loadMaterial(config);
  if (material.commonName !== config.agent.name) {
    throw new NbackupError(
      'tls',
      `agent.name "${config.agent.name}" does not match the CN "${material.commonName}" of ${config.tls.client_cert}; the server would refuse it`,
    );
  }
  const log = createLogger(config.logging, 'nbackup-agent', configPath);
  warnCodecs(config, log);
  return { config, material, log };
}

/** Once at start-up: gzip without the native codecs costs about 3× the CPU, zstd cannot run. */
function warnCodecs(config: AgentConfig, log: Logger): void {
  const problem = nativeCodecProblem();
  if (!problem) return;
  const zstd = config.backups.filter((b) => b.compression.format === 'zstd').map((b) => b.name);
  log.warn(
    { problem, install: NATIVE_PACKAGES, zstdEntries: zstd },
    `native compression is unavailable: gzip runs on node:zlib (about 3× the CPU)${zstd.length > 0 ? ' and the zstd entries will fail' : ''}; install ${NATIVE_PACKAGES}, then npm ci`,
  );
}

/** Runs one entry under its run limit. */
async function runEntry(entry: BackupConfig, config: AgentConfig, material: TlsMaterial, log: Logger, progress?: ProgressReporter) {
  const limit = runLimit(entry.name);
  try {
    return await runBackup(entry, { config, material, log, onProgress: progress ? (p) => progress.update(p) : undefined, signal: limit.signal });
  } finally {
    limit.clear();
  }
}

/** `--once`: every entry (or one) now; 0 only when every one committed, else one stderr line per failure. */
export async function runOnce(configPath: string, opts: { backup?: string; progress: boolean }): Promise<number> {
  const { config, material, log } = await setup(configPath);
  let entries: readonly BackupConfig[] = config.backups;
  if (opts.backup !== undefined) {
    entries = config.backups.filter((b) => b.name === opts.backup);
    if (entries.length === 0) {
      const names = config.backups.map((b) => b.name).join(', ');
      throw new NbackupError('usage', `no backup entry named "${opts.backup}" in ${configPath} (entries: ${names})`);
    }
  }
  let failed = 0;
  for (const entry of entries) {
    const progress = opts.progress ? new ProgressReporter(entry.name, process.stderr) : undefined;
    try {
      const outcome = await runEntry(entry, config, material, log, progress);
      progress?.finish(`committed ${outcome.bytes} bytes`);
    } catch (err) {
      const e = asNbackupError(err);
      progress?.finish('failed');
      failed++;
      stderrLine(`backup "${entry.name}" failed: ${e.message}`);
      log.error({ backup: entry.name, kind: e.kind, err: e.message }, 'backup failed');
    }
  }
  await flushLogs(log);
  return failed === 0 ? 0 : EXIT_BACKUP_FAILED;
}

/** Daemon: cron schedules, SIGHUP reloads the config, SIGTERM/SIGINT wait for a running backup. */
export async function runDaemon(configPath: string): Promise<number> {
  let { config, material, log } = await setup(configPath);
  const scheduler = new Scheduler(config.backups, (entry) => runEntry(entry, config, material, log).then(() => undefined), log);
  // Signals are handled before the daemon says it has started: a SIGTERM right after that line
  // must stop it cleanly, not kill it.
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting without waiting for the running backup');
        resolve(1);
        return;
      }
      stopping = true;
      log.info({ signal, waiting: scheduler.busy }, 'shutting down');
      void scheduler.stop().then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      loadAgentConfig(configPath)
        .then((next) => {
          const nextMaterial = loadMaterial(next);
          config = next;
          material = nextMaterial;
          scheduler.reload(next.backups);
          warnUnimplemented(next, log);
          log.info({ backups: next.backups.map((b) => b.name) }, 'configuration reloaded');
        })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'reload failed; keeping the previous configuration'));
    });
  });
  warnUnimplemented(config, log);
  scheduler.start();
  log.info({ backups: config.backups.map((b) => b.name), server: config.server.address }, 'daemon started');
  return stopped;
}

/** Keys the configuration accepts but this version does not act on: said at start-up, never silently. */
function warnUnimplemented(config: AgentConfig, log: Logger): void {
  if (config.daemon.control_channel.enabled) {
    log.warn(
      { key: 'daemon.control_channel.enabled' },
      'the control channel is not implemented in this version; the daemon runs without one (set daemon.control_channel.enabled: false to silence this)',
    );
  }
}

/** `health HOST:PORT`: 0 when the server is READY. */
export async function runHealth(address: string, configPath: string): Promise<number> {
  const config = await loadAgentConfig(configPath);
  const target = parseHostPort(address, 1);
  if (!target) throw new NbackupError('usage', `"${address}" is not host:port`);
  const pong = await checkHealth(target, loadMaterial(config), config.retry.connect_timeout);
  process.stdout.write(`${describeHealth(pong)}\n`);
  return pong.status === 0 ? 0 : EXIT_BACKUP_FAILED;
}

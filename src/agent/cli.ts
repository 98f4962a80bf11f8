import { loadAgentConfig, parseHostPort, type AgentConfig, type BackupConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import { createLogger, type Logger } from '../log/logger.js';
import { loadTlsMaterial, type TlsMaterial } from '../tls/material.js';
import { runBackup } from './backup-job.js';
import { checkHealth, describeHealth } from './health.js';
import { ProgressReporter } from './progress.js';
import { Scheduler } from './scheduler.js';

/** What the nbackup-agent command does; cmd/ only parses arguments and calls these. */
const DAY_MS = 24 * 3600 * 1000;

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
  return { config, material, log: createLogger(config.logging, 'nbackup-agent') };
}

/** `--once`: every entry (or one) now; 0 only when every one committed. */
export async function runOnce(configPath: string, opts: { backup?: string; progress: boolean }): Promise<number> {
  const { config, material, log } = await setup(configPath);
  let entries: readonly BackupConfig[] = config.backups;
  if (opts.backup !== undefined) {
    entries = config.backups.filter((b) => b.name === opts.backup);
    if (entries.length === 0) {
      stderrLine(`no backup entry named "${opts.backup}" in ${configPath} (entries: ${config.backups.map((b) => b.name).join(', ')})`);
      return 2;
    }
  }
  let failed = 0;
  for (const entry of entries) {
    const progress = opts.progress ? new ProgressReporter(entry.name, process.stderr) : null;
    try {
      const outcome = await runBackup(entry, {
        config,
        material,
        log,
        onProgress: progress ? (p) => progress.update(p) : undefined,
        signal: AbortSignal.timeout(DAY_MS),
      });
      progress?.finish(`committed ${outcome.bytes} bytes`);
    } catch (err) {
      progress?.finish('failed');
      failed++;
      stderrLine(`backup "${entry.name}" failed: ${errorMessage(err)}`);
      log.error({ backup: entry.name, err: errorMessage(err) }, 'backup failed');
    }
  }
  await flushLogs(log);
  return failed === 0 ? 0 : 1;
}

/** Daemon: cron schedules, SIGHUP reloads the config, SIGTERM/SIGINT wait for a running backup. */
export async function runDaemon(configPath: string): Promise<number> {
  let { config, material, log } = await setup(configPath);
  const scheduler = new Scheduler(
    config.backups,
    async (entry) => {
      await runBackup(entry, { config, material, log, signal: AbortSignal.timeout(DAY_MS) });
    },
    log,
  );
  scheduler.start();
  log.info({ backups: config.backups.map((b) => b.name), server: config.server.address }, 'daemon started');
  return new Promise<number>((resolve) => {
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
          log.info({ backups: next.backups.map((b) => b.name) }, 'configuration reloaded');
        })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'reload failed; keeping the previous configuration'));
    });
  });
}

export async function runHealth(address: string, configPath: string): Promise<number> {
  const config = await loadAgentConfig(configPath);
  const target = parseHostPort(address, 1);
  if (!target) throw new NbackupError('config', `"${address}" is not host:port`);
  const pong = await checkHealth(target, loadMaterial(config), config.retry.connect_timeout);
  process.stdout.write(`${describeHealth(pong)}\n`);
  return pong.status === 0 ? 0 : 1;
}

function flushLogs(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}

import { formatDuration, loadAgentConfig, parseHostPort, type AgentConfig, type BackupConfig } from '../config/index.js';
import { NbackupError, asNbackupError, errorMessage } from '../errors.js';
import { EXIT_BACKUP_FAILED, exitCodeForSignal, type StopSignal } from '../exit-codes.js';
import { catchStopSignals } from './stop-signals.js';
import { takeEarlyHangup } from '../cli/early-hangup.js';
import { printableText } from '../printable.js';
import { createLogger, flushLogs, reconfigureLogger, setLogInterceptor, type Logger } from '../log/logger.js';
import { daysUntil, loadTlsMaterial, type TlsMaterial } from '../tls/material.js';
import { runBackup, type BackupOutcome } from './backup-job.js';
import { hookFailure, runHook } from './hooks.js';
import { NATIVE_PACKAGES, nativeCodecProblem } from './pipeline/codecs.js';
import { checkHealth, describeHealth } from './health.js';
import { ProgressReporter } from './progress.js';
import { estimateFileBytes } from './size-estimate.js';
import { Scheduler } from './scheduler.js';
import { ControlClient } from './control/control-client.js';

/** What the nbackup-agent command does; cmd/ only parses arguments and calls these. */

function stderrLine(line: string): void {
  process.stderr.write(`nbackup-agent: ${printableText(line)}\n`);
}

function loadMaterial(config: AgentConfig): TlsMaterial {
  return loadTlsMaterial({ ca: config.tls.ca_cert, cert: config.tls.client_cert, key: config.tls.client_key });
}

/** The configuration, certificates and checks a start or a reload must pass, in the same way. */
async function validated(configPath: string): Promise<{ config: AgentConfig; material: TlsMaterial }> {
  const config = await loadAgentConfig(configPath);
  const material = loadMaterial(config);
  if (material.commonName !== config.agent.name) {
    throw new NbackupError(
      'tls',
      `agent.name "${config.agent.name}" does not match the CN "${material.commonName}" of ${config.tls.client_cert}; the server would refuse it`,
    );
  }
  return { config, material };
}

/** What a run of an entry needs; the daemon swaps it whole on a reload. */
interface AgentState {
  config: AgentConfig;
  material: TlsMaterial;
  log: Logger;
  control?: ControlClient;
}

/** How long --once waits for its control channel before it starts anyway. */
const CONTROL_UP_WAIT_MS = 3000;

/** The control channel, when the configuration asks for one (started). */
function startControl(state: AgentState): ControlClient | undefined {
  if (!state.config.daemon.control_channel.enabled) return undefined;
  const control = new ControlClient(state.config, state.material, controlLog(state));
  control.start();
  return control;
}

/**
 * The control channel after a reload. The daemon keeps one ControlClient, which a running backup
 * holds too (admission, rotation): a reload that changes nothing the channel depends on leaves its
 * connection as it is; one that does reconnects that same client (ControlClient.reconfigure), so
 * the backup goes on hearing the server. Only turning the channel off stops it (a running backup
 * then goes on without one, as when it is down), and turning it on starts one for later backups.
 */
function reloadControl(state: AgentState): void {
  const enabled = state.config.daemon.control_channel.enabled;
  if (state.control && enabled) {
    state.control.reconfigure(state.config, state.material, controlLog(state));
  } else if (state.control) {
    void state.control.stop();
    state.control = undefined;
  } else {
    state.control = startControl(state);
  }
}

function controlLog(state: AgentState): Logger {
  return state.log.child({ channel: 'control' });
}

async function setup(configPath: string): Promise<AgentState> {
  const { config, material } = await validated(configPath);
  const log = createLogger(config.logging, 'nbackup-agent', configPath);
  warnCodecs(config, log);
  warnExpiry(config, material, log);
  return { config, material, log };
}

/** Warn this long before the agent's (or its CA's) certificate expires: time to issue a new one. */
const EXPIRY_WARN_DAYS = 30;

function warnExpiry(config: AgentConfig, material: TlsMaterial, log: Logger): void {
  const certDays = daysUntil(material.notAfter.cert);
  const caDays = daysUntil(material.notAfter.ca);
  if (certDays < EXPIRY_WARN_DAYS) {
    log.warn({ file: config.tls.client_cert, notAfter: material.notAfter.cert.toISOString(), daysLeft: certDays }, `the agent certificate expires in ${certDays} days; issue a new one (nbackup-server pki issue-agent)`);
  }
  if (caDays < EXPIRY_WARN_DAYS) {
    log.warn({ file: config.tls.ca_cert, notAfter: material.notAfter.ca.toISOString(), daysLeft: caDays }, `the CA certificate expires in ${caDays} days`);
  }
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

/**
 * Runs one entry: its `before` hook (a failure skips the backup), the backup (each attempt under
 * the entry's run limit, all of it under `signal`), then its `after` hook, which always runs and
 * hears the outcome in NBACKUP_OUTCOME (success | failure) and NBACKUP_ERROR.
 */
async function runEntry(entry: BackupConfig, state: AgentState, o: { progress?: ProgressReporter; signal?: AbortSignal; stopping?: AbortSignal } = {}) {
  const { config, material } = state;
  const log = state.log.child({ backup: entry.name });
  const hookEnv = { NBACKUP_BACKUP: entry.name, NBACKUP_STORAGE: entry.storage, NBACKUP_AGENT: config.agent.name };
  let failure: NbackupError | null = null;
  if (entry.before) {
    const r = await runHook('before', entry.before, { timeoutMs: entry.hook_timeout, log, signal: o.signal, env: { ...hookEnv, NBACKUP_PHASE: 'before' } });
    const bad = hookFailure('before', r, entry.hook_timeout);
    if (bad) failure = new NbackupError('hook', `${bad.message}; the backup was not run`);
  }
  let outcome: BackupOutcome | null = null;
  if (!failure) {
    try {
      outcome = await runBackup(entry, {
        config,
        material,
        log: state.log,
        onProgress: o.progress ? (p) => o.progress!.update(p) : undefined,
        signal: o.signal,
        stopping: o.stopping,
        control: state.control,
      });
    } catch (err) {
      failure = asNbackupError(err);
    }
  }
  if (entry.after) {
    const env = { ...hookEnv, NBACKUP_PHASE: 'after', NBACKUP_OUTCOME: failure ? 'failure' : 'success', NBACKUP_ERROR: failure?.message ?? '' };
    const r = await runHook('after', entry.after, { timeoutMs: entry.hook_timeout, log, env });
    const bad = hookFailure('after', r, entry.hook_timeout);
    // The backup's own result stands: a committed archive is not undone by a failing clean-up.
    if (bad) log.error({ err: bad.message, backupOutcome: failure ? 'failure' : 'success' }, 'after hook failed');
  }
  if (failure) throw failure;
  return outcome!;
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
  const state: AgentState = { config, material, log };
  state.control = startControl(state);
  // Admission (CDFE/CADM) needs the server to know the channel before the first handshake.
  if (state.control && !(await state.control.waitUntilUp(CONTROL_UP_WAIT_MS))) log.warn('control channel not up; going on without it');
  const interrupt = onceInterrupt(log);
  let failed = 0;
  for (const entry of entries) {
    if (interrupt.by) {
      stderrLine(`backup "${entry.name}" not run: interrupted by ${interrupt.by}`);
      continue;
    }
    const progress = opts.progress ? new ProgressReporter(entry.name, process.stderr) : undefined;
    const scan = new AbortController();
    if (progress) {
      setLogInterceptor(log, (write) => progress.around(write));
      void estimateFileBytes(entry.sources.map((s) => s.path), entry.exclude, scan.signal).then((bytes) => bytes !== null && progress.estimate(bytes));
    }
    try {
      const outcome = await runEntry(entry, state, { progress, signal: interrupt.signal, stopping: interrupt.signal });
      const n = outcome.warnings;
      const warnings = `${n} warning${n === 1 ? '' : 's'}`;
      progress?.finish(`committed ${(outcome.bytes / 1e6).toFixed(1)} MB${n > 0 ? `, ${warnings}` : ''}`);
      // Committed, but not everything under the sources is in it as it was: say so where cron mails it.
      if (n > 0) stderrLine(`backup "${entry.name}" committed with ${warnings}; the log names each path left out or changed while it was read`);
    } catch (err) {
      const e = asNbackupError(err);
      progress?.finish('failed');
      failed++;
      stderrLine(`backup "${entry.name}" failed: ${e.message}`);
      log.error({ backup: entry.name, kind: e.kind, err: e.message }, 'backup failed');
    } finally {
      scan.abort();
      setLogInterceptor(log, null);
    }
  }
  interrupt.remove();
  await state.control?.stop();
  await flushLogs(log);
  if (interrupt.by) return exitCodeForSignal(interrupt.by);
  return failed === 0 ? 0 : EXIT_BACKUP_FAILED;
}

/**
 * SIGINT or SIGTERM during `--once`: the running backup is aborted (its connections closed, the
 * server told to drop the session and its temporary file), the entries after it are not run, and
 * the exit status is 130 or 143. A second signal exits at once.
 */
function onceInterrupt(log: Logger): { readonly by: StopSignal | null; signal: AbortSignal; remove: () => void } {
  const controller = new AbortController();
  let by: StopSignal | null = null;
  const remove = catchStopSignals((signal) => {
    if (by) {
      stderrLine(`${signal} again: exiting without waiting for the server`);
      process.exit(exitCodeForSignal(signal));
    }
    by = signal;
    log.warn({ signal }, 'interrupted: aborting the running backup');
    controller.abort(new NbackupError('aborted', `interrupted by ${signal}; the server was asked to drop the session`));
  });
  return {
    get by() {
      return by;
    },
    signal: controller.signal,
    remove,
  };
}

/**
 * Daemon: cron schedules. SIGHUP reloads the configuration (checked exactly as at start-up; a bad
 * one keeps the old) and applies its logging section, reopening the log file. SIGTERM/SIGINT stop
 * scheduling and let a running backup finish within daemon.shutdown_grace, then abort it (the
 * server is told to drop the session); a second signal aborts at once. Exits 0 either way.
 */
export async function runDaemon(configPath: string): Promise<number> {
  const state = await setup(configPath);
  const log = state.log;
  // `stopSignal` fires at the first signal (a retry back-off is not waited out any more), `shutdown`
  // when the grace is over or at a second signal (the running backup is aborted).
  const stopSignal = new AbortController();
  const shutdown = new AbortController();
  const scheduler = new Scheduler(
    state.config.backups,
    (entry) => runEntry(entry, state, { signal: shutdown.signal, stopping: stopSignal.signal }).then(() => undefined),
    log,
  );
  // Signals are handled before the daemon says it has started: a SIGTERM right after that line
  // must stop it cleanly, not kill it.
  let stopping = false;
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal, running: scheduler.busy }, 'second signal: aborting the running backup and exiting');
        shutdown.abort(new NbackupError('aborted', `the daemon was told to stop again (${signal}) before the backup finished`));
        return;
      }
      stopping = true;
      stopSignal.abort(new NbackupError('aborted', `the daemon is stopping (${signal}): a backup still connecting or waiting to retry is given up`));
      const grace = state.config.daemon.shutdown_grace;
      log.info({ signal, waiting: scheduler.busy, graceS: grace / 1000 }, 'shutting down');
      const timer = setTimeout(() => {
        log.warn({ graceS: grace / 1000 }, 'shutdown grace is over: aborting the running backup');
        shutdown.abort(new NbackupError('aborted', `the daemon is stopping and the backup did not finish within daemon.shutdown_grace (${formatDuration(grace)})`));
      }, grace);
      void scheduler.stop().then(() => {
        clearTimeout(timer);
        log.info('stopped');
        resolve(0);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // Reloads read the file asynchronously: only the latest SIGHUP's is applied, and none once
    // the daemon is stopping (a control channel started then would keep the process alive).
    let reloads = 0;
    const reload = (): void => {
      if (stopping) {
        log.info('SIGHUP ignored: the daemon is stopping');
        return;
      }
      const ticket = ++reloads;
      validated(configPath)
        .then((next) => {
          if (stopping || ticket !== reloads) {
            log.info({ reason: stopping ? 'the daemon is stopping' : 'a later SIGHUP reloads again' }, 'reload not applied');
            return;
          }
          reconfigureLogger(log, next.config.logging, configPath);
          state.config = next.config;
          state.material = next.material;
          reloadControl(state);
          scheduler.reload(next.config.backups);
          log.info({ backups: next.config.backups.map((b) => b.name), logging: next.config.logging }, 'configuration reloaded');
          warnExpiry(next.config, next.material, log);
        })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'reload failed; keeping the previous configuration'));
    };
    process.on('SIGHUP', reload);
    // A SIGHUP that came while the daemon was starting (src/cli/early-hangup.ts) may have been
    // meant for a file changed after it was read: reload once.
    if (takeEarlyHangup()) {
      log.info('SIGHUP received while starting: reloading the configuration');
      reload();
    }
  });
  state.control = startControl(state);
  scheduler.start();
  log.info({ backups: state.config.backups.map((b) => b.name), server: state.config.server.address }, 'daemon started');
  const code = await stopped;
  await state.control?.stop();
  await flushLogs(log);
  return code;
}

/** `health [HOST:PORT]` (default: server.address of the config): 0 when the server is READY. */
export async function runHealth(address: string | undefined, configPath: string): Promise<number> {
  const config = await loadAgentConfig(configPath);
  const target = address === undefined ? config.server : parseHostPort(address, 1);
  if (!target) throw new NbackupError('usage', `"${address}" is not host:port`);
  const answer = await checkHealth(target, loadMaterial(config), config.retry.connect_timeout);
  process.stdout.write(`${describeHealth(answer)}\n`);
  return answer.status === 0 ? 0 : EXIT_BACKUP_FAILED;
}

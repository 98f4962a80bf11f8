import { loadServerConfig } from '../config/index.js';
import { errorMessage } from '../errors.js';
import { createLogger } from '../log/logger.js';
import { takeEarlyHangup } from '../cli/early-hangup.js';
import { BackupServer } from './server.js';
import { hangupHandler } from './hangup.js';

/**
 * What the nbackup-server command does: listen until SIGTERM/SIGINT; SIGUSR2 asks for a stream
 * rotation; SIGHUP applies server.yaml's logging section and reopens the log file (hangup.ts).
 */
export async function runServer(configPath: string): Promise<void> {
  const config = await loadServerConfig(configPath);
  const log = createLogger(config.logging, 'nbackup-server', configPath);
  const server = new BackupServer(config, log);
  // Sessions are independent: a bug that escapes one must not take every other session down.
  process.on('unhandledRejection', (err) => log.error({ err: errorMessage(err) }, 'internal error (unhandled rejection); serving on'));
  // Signals are handled before the server says it listens: a SIGTERM right after must stop it cleanly.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // By hand: one stream rotation in each parallel session whose agent has a control channel.
  process.on('SIGUSR2', () => log.info({ sessions: server.rotator.rotateNow() }, 'stream rotation requested (SIGUSR2)'));
  const hangup = hangupHandler(configPath, config, log, () => stopping);
  process.on('SIGHUP', hangup);
  // One that came while the server was starting (src/cli/early-hangup.ts), perhaps after the log
  // file was opened: applied now.
  if (takeEarlyHangup()) hangup();
  await server.start();
}

import { loadServerConfig } from '../config/index.js';
import { errorMessage } from '../errors.js';
import { createLogger } from '../log/logger.js';
import { BackupServer } from './server.js';

/** What the nbackup-server command does: listen until SIGTERM/SIGINT. */
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
  await server.start();
}

#!/usr/bin/env node
import { Command } from 'commander';
import { loadServerConfig } from '../src/config/index.js';
import { errorMessage } from '../src/errors.js';
import { createLogger } from '../src/log/logger.js';
import { BackupServer } from '../src/server/server.js';

const program = new Command()
  .name('nbackup-server')
  .description('Receive backups from nbackup agents over mTLS and keep the newest N per agent/backup.')
  .requiredOption('-c, --config <file>', 'server.yaml')
  .version('0.1.0')
  .action(async (opts: { config: string }) => {
    const config = await loadServerConfig(opts.config);
    const log = createLogger(config.logging, 'nbackup-server');
    const server = new BackupServer(config, log);
    // Sessions are independent: a bug that escapes one must not take every other session down.
    process.on('unhandledRejection', (err) => log.error({ err: errorMessage(err) }, 'internal error (unhandled rejection); serving on'));
    await server.start();
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      server.stop().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`nbackup-server: ${errorMessage(err)}\n`);
  process.exit(2);
});

#!/usr/bin/env node
import { Command } from 'commander';
import { runCommand } from '../src/cli/run-command.js';
import { runServer } from '../src/server/cli.js';

const program = new Command()
  .name('nbackup-server')
  .description('Receive backups from nbackup agents over mTLS and keep the newest N per agent/backup.')
  .requiredOption('-c, --config <file>', 'server.yaml')
  .version('0.1.0')
  .action(async (opts: { config: string }) => {
    await runServer(opts.config);
  });

await runCommand(program);

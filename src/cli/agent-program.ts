import { Command } from 'commander';
import { runDaemon, runHealth, runOnce } from '../agent/cli.js';
import { describeEngines } from '../agent/pipeline/codecs.js';
import { usageError } from './run-command.js';

/** The nbackup-agent command line: what `--help` prints and what the man page (man-page.ts) is made from. */
export function agentProgram(): Command {
  const program = new Command()
    .name('nbackup-agent')
    .description('Stream backups (tar → parallel gzip → SHA-256 → mTLS) to an nbackup server.')
    .enablePositionalOptions()
    .option('-c, --config <file>', 'agent.yaml (required)')
    .option('--once', 'run the backup entries now, then exit (0 only if every entry committed)')
    .option('--backup <name>', 'with --once: run only this entry')
    .option('--progress', 'with --once: show progress on stderr')
    .version(`0.1.0\n${describeEngines()}`)
    .action(async (opts: { config?: string; once?: boolean; backup?: string; progress?: boolean }) => {
      if (!opts.config) throw usageError("required option '-c, --config <file>' not specified");
      if (opts.once) {
        process.exitCode = await runOnce(opts.config, { backup: opts.backup, progress: !!opts.progress });
        return;
      }
      if (opts.backup || opts.progress) throw usageError('--backup and --progress are only valid with --once');
      process.exitCode = await runDaemon(opts.config);
    });

  program
    .command('health')
    .description('ask a server for its status and free disk space over mTLS')
    .argument('[host:port]', 'server address (default: server.address of the config)')
    .requiredOption('-c, --config <file>', 'agent.yaml (for the certificates)')
    .action(async (address: string | undefined, opts: { config: string }) => {
      process.exitCode = await runHealth(address, opts.config);
    });
  return program;
}

import { Command } from 'commander';
import { describeEngines } from '../agent/pipeline/codecs.js';

// Each command loads its own part of the agent when it runs: a restore starts without the backup side.
const backupSide = () => import('../agent/cli.js');
const readSide = () => import('../agent/restore/cli.js');
import { usageError } from './run-command.js';
import { releaseEarlyHangup } from './early-hangup.js';

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
    // Only the daemon reloads on SIGHUP (it takes the start-up handler over); every other command
    // ends on it, as a command run from a terminal should.
    .hook('preAction', (_program, action) => {
      if (action !== program || program.opts<{ once?: boolean }>().once) releaseEarlyHangup();
    })
    .action(async (opts: { config?: string; once?: boolean; backup?: string; progress?: boolean }) => {
      if (!opts.config) throw usageError("required option '-c, --config <file>' not specified");
      if (opts.once) {
        process.exitCode = await (await backupSide()).runOnce(opts.config, { backup: opts.backup, progress: !!opts.progress });
        return;
      }
      if (opts.backup || opts.progress) throw usageError('--backup and --progress are only valid with --once');
      process.exitCode = await (await backupSide()).runDaemon(opts.config);
    });

  program
    .command('health')
    .description('ask a server for its status and free disk space over mTLS')
    .argument('[host:port]', 'server address (default: server.address of the config)')
    .requiredOption('-c, --config <file>', 'agent.yaml (for the certificates)')
    .action(async (address: string | undefined, opts: { config: string }) => {
      process.exitCode = await (await backupSide()).runHealth(address, opts.config);
    });

  program
    .command('list')
    .description("list this agent's backups on the server: timestamp, age, size, files, format, per backup")
    .requiredOption('-c, --config <file>', 'agent.yaml')
    .option('--backup <name>', 'only this backup entry')
    .action(async (opts: { config: string; backup?: string }) => {
      process.exitCode = await (await readSide()).runList(opts.config, opts.backup);
    });

  program
    .command('restore')
    .description('restore a backup (or the members matching PATTERNs) into a folder, or write the archive to stdout')
    .argument('[patterns...]', 'globs on member paths (like etc/nginx/** or usr/share/doc/*/copyright); a folder brings what is under it')
    .requiredOption('-c, --config <file>', 'agent.yaml')
    .requiredOption('--backup <name>', 'the backup entry')
    .option('--at <timestamp>', 'latest, or an archive name from `list` (with or without .tar.gz)', 'latest')
    .option('--to <dir>', 'folder to restore into (created if missing); nothing is written outside it')
    .option('--stdout', 'write the archive itself to stdout, for | tar -xzf - (its SHA-256 is still checked)')
    .option('--force', 'replace what is in the way in the folder (never a folder); without it, a file of the same size and mtime (or a symlink to the same target, and so on) is already there and left alone, and anything else in the way is named and makes the exit status 1')
    .action(async (patterns: string[], opts: { config: string; backup: string; at: string; to?: string; stdout?: boolean; force?: boolean }) => {
      if (!opts.to && !opts.stdout) throw usageError('restore needs --to <dir> or --stdout');
      process.exitCode = await (await readSide()).runRestore(opts.config, { backup: opts.backup, at: opts.at, to: opts.to, stdout: !!opts.stdout, force: !!opts.force, patterns });
    });

  program
    .command('find')
    .description("in which of this agent's backups a path matching PATTERN exists, with its size and mtime in each; an unreadable archive is named on stderr and skipped (exit 1)")
    .argument('<pattern>', 'glob on member paths, like etc/hosts or **/nginx.conf')
    .requiredOption('-c, --config <file>', 'agent.yaml')
    .option('--backup <name>', 'only this backup entry')
    .action(async (pattern: string, opts: { config: string; backup?: string }) => {
      process.exitCode = await (await readSide()).runFind(opts.config, pattern, opts.backup);
    });
  return program;
}

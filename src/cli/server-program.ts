import { Command, InvalidArgumentError } from 'commander';
import { initCa, issueAgentFiles, issueServerFiles } from '../pki/pki-files.js';
import { runServer } from '../server/cli.js';
import { runRetention } from '../server/retention-cli.js';
import { runVerify } from '../server/verify.js';
import { usageError } from './run-command.js';
import { releaseEarlyHangup } from './early-hangup.js';

/** The nbackup-server command line: what `--help` prints and what the man page (man-page.ts) is made from. */
export function serverProgram(): Command {
  const program = new Command()
    .name('nbackup-server')
    .description('Receive backups from nbackup agents over mTLS and keep the newest N per agent/backup.')
    .enablePositionalOptions()
    .option('-c, --config <file>', 'server.yaml (required to serve)')
    .version('0.1.0')
    // Only the serving server handles SIGHUP (it takes the start-up handler over); pki, verify and
    // retention end on it, as commands run from a terminal should.
    .hook('preAction', (_program, action) => {
      if (action !== program) releaseEarlyHangup();
    })
    .action(async (opts: { config?: string }) => {
      if (!opts.config) throw usageError("required option '-c, --config <file>' not specified");
      await runServer(opts.config);
    });

  function days(value: string): number {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > 36500) throw new InvalidArgumentError('a whole number of days, 1 to 36500');
    return n;
  }

  const pki = program
    .command('pki')
    .description('the built-in PKI: a CA, the server certificate and one certificate per agent (ECDSA P-256)');

  const printWritten = (files: string[]): void => {
    for (const f of files) process.stdout.write(`wrote ${f}\n`);
  };

  pki
    .command('init-ca')
    .description('create the CA: <dir>/ca.crt and <dir>/ca.key (never overwritten)')
    .option('--dir <dir>', 'the PKI folder', 'pki')
    .option('--cn <name>', 'the CA certificate\'s common name', 'nbackup CA')
    .option('--days <n>', 'validity', days, 3650)
    .action(async (opts: { dir: string; cn: string; days: number }) => {
      printWritten(await initCa(opts.cn, opts));
    });

  pki
    .command('issue-server')
    .description('issue <dir>/server.crt and <dir>/server.key, signed by the CA in <dir>')
    .requiredOption('--san <names>', 'comma-separated DNS names and IP addresses agents connect to (e.g. backup.lan,192.0.2.10)')
    .option('--dir <dir>', 'the PKI folder', 'pki')
    .option('--cn <name>', 'the certificate\'s common name (default: the first SAN)')
    .option('--days <n>', 'validity', days, 825)
    .action(async (opts: { dir: string; san: string; cn?: string; days: number }) => {
      const san = opts.san.split(',').map((s) => s.trim()).filter((s) => s !== '');
      printWritten(await issueServerFiles(opts.cn ?? san[0] ?? '', san, opts));
    });

  pki
    .command('issue-agent')
    .description('issue <dir>/NAME.crt and <dir>/NAME.key for the agent NAME (its agent.name), signed by the CA in <dir>')
    .argument('<name>', 'the agent\'s name: the certificate\'s CN, which the server checks against agent.name')
    .option('--dir <dir>', 'the PKI folder', 'pki')
    .option('--days <n>', 'validity', days, 825)
    .action(async (name: string, opts: { dir: string; days: number }) => {
      printWritten(await issueAgentFiles(name, opts));
    });

  program
    .command('verify')
    .description('re-read archives: each must match the SHA-256 recorded at commit and decompress to a whole tar; one line per archive')
    .requiredOption('-c, --config <file>', 'server.yaml')
    .option('--storage <name>', 'only this storage')
    .option('--agent <name>', 'only this agent\'s archives')
    .action(async (opts: { config: string; storage?: string; agent?: string }) => {
      process.exitCode = await runVerify(opts.config, opts);
    });

  program
    .command('retention')
    .description("apply each storage's keep policy now (the server does after every commit): one line per archive, kept and why, or deleted")
    .requiredOption('-c, --config <file>', 'server.yaml')
    .option('--dry-run', 'only show what would be deleted, and why the rest is kept')
    .option('--storage <name>', 'only this storage')
    .option('--agent <name>', 'only this agent\'s archives')
    .action(async (opts: { config: string; dryRun?: boolean; storage?: string; agent?: string }) => {
      process.exitCode = await runRetention(opts.config, { dryRun: !!opts.dryRun, storage: opts.storage, agent: opts.agent });
    });
  return program;
}

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentProgram } from './agent-program.js';
import { renderManPage, type ManExtras } from './man-page.js';
import { serverProgram } from './server-program.js';

/**
 * `npm run build` ends here: writes dist/man/nbackup-agent.1 and nbackup-server.1 from the
 * commander programs and the example configurations (packaging/build-deb.sh ships them).
 */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

const COMMON_FILES: [string, string][] = [
  ['/etc/nbackup/pki/', 'certificates and keys made by nbackup-server pki (keys mode 0600)'],
  ['/var/log/nbackup/', 'log files, when logging.file points there'],
];

export function agentExtras(configText: string): ManExtras {
  return {
    description: [
      'nbackup-agent walks its sources and streams tar, compressed in parallel (gzip or zstd), hashed with SHA-256, through a ring buffer over mutual TLS 1.3 to nbackup-server, with no temporary files on the source host. A broken connection resumes from the offset the server acknowledged. With --once it runs every backup entry (or one) and exits; without, it runs as a daemon and starts each entry on its cron schedule.',
      'Every archive is a plain .tar.gz or .tar.zst that tar(1) restores with nothing else installed. A file that cannot be read is reported as a warning naming it; nothing is left out silently.',
    ],
    signals: [
      ['SIGHUP', 'reload the configuration, checked as at start-up; an invalid file or an agent.name that does not match the certificate is refused and the old configuration kept. The logging section is applied and logging.file reopened; the control channel keeps its connection unless server.address, agent.name, the certificates or daemon.control_channel changed. A SIGHUP that arrives while the daemon is still starting reloads once it has started. Ignored once the daemon is stopping. Every other command (--once, restore, list and the rest) ends on SIGHUP.'],
      ['SIGTERM, SIGINT', 'stop scheduling; a running backup may finish within daemon.shutdown_grace (default 5m), then it is aborted and the server told to drop its temporary file. A backup still connecting to the server or waiting to retry is not waited for. A second signal aborts at once. Exit status 0. During restore --to: the file being written is removed, one line says how many files were restored, and the exit status is 130 (SIGINT) or 143 (SIGTERM); the same command restores the rest. During --once: the running backup is aborted and dropped on the server, the entries after it are not run, and the exit status is 130 or 143.'],
    ],
    files: [['/etc/nbackup/agent.yaml', 'the configuration (see CONFIGURATION)'], ...COMMON_FILES],
    config: { file: 'agent.yaml', text: configText },
    seeAlso: ['nbackup-server(1)', 'tar(1)', 'zstd(1)', 'systemctl(1)'],
  };
}

export function serverExtras(configText: string): ManExtras {
  return {
    description: [
      'nbackup-server accepts only agents whose certificate comes from its CA and whose CN is the agent name they announce. It reassembles parallel streams, verifies SHA-256 as the bytes arrive, writes each archive atomically (temporary file, fsync, rename) as <base_dir>/<agent>/<backup>/<timestamp>.tar.gz (or .tar.zst), keeps the newest max_backups, and never lets a storage fall below its min_free reserve.',
      'Sessions survive a server restart within session_ttl. With server.metrics enabled it serves Prometheus /metrics and /healthz over plain HTTP on loopback by default. The pki commands make the CA, server and agent certificates (ECDSA P-256) and never overwrite a file.',
    ],
    signals: [
      ['SIGTERM, SIGINT', 'stop accepting connections; sessions under way stay on disk and a restarted server takes them up. Exit status 0.'],
      ['SIGUSR2', 'ask each parallel session whose agent has a control channel for one stream rotation.'],
      ['SIGHUP', 'read server.yaml again and apply its logging section: level, format, and logging.file reopened (logrotate: rename, then SIGHUP). Other sections are not changed while the server runs; one that differs from the running configuration is named in a warning and applied at the next restart. A file that no longer loads changes nothing.'],
    ],
    files: [
      ['/etc/nbackup/server.yaml', 'the configuration (see CONFIGURATION)'],
      ['/var/lib/nbackup/', 'the storages of the example configuration (the service can write only there and in /var/log/nbackup)'],
      ...COMMON_FILES,
    ],
    config: { file: 'server.yaml', text: configText },
    seeAlso: ['nbackup-agent(1)', 'tar(1)', 'openssl-verify(1)', 'systemctl(1)'],
  };
}

function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

export function writeManPages(outDir: string, date = new Date().toISOString().slice(0, 10)): string[] {
  fs.mkdirSync(outDir, { recursive: true });
  const config = (name: string) => fs.readFileSync(path.join(ROOT, 'configs', `${name}.example.yaml`), 'utf8');
  const pages: [string, string][] = [
    ['nbackup-agent.1', renderManPage(agentProgram(), version(), date, agentExtras(config('agent')))],
    ['nbackup-server.1', renderManPage(serverProgram(), version(), date, serverExtras(config('server')))],
  ];
  return pages.map(([file, text]) => {
    const out = path.join(outDir, file);
    fs.writeFileSync(out, text);
    return out;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  for (const f of writeManPages(path.join(ROOT, 'dist', 'man'), process.env.SOURCE_DATE_EPOCH ? new Date(Number(process.env.SOURCE_DATE_EPOCH) * 1000).toISOString().slice(0, 10) : undefined)) {
    process.stdout.write(`wrote ${path.relative(ROOT, f)}\n`);
  }
}

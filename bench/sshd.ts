/**
 * A private sshd on a loopback port for the reference pipeline (tar | pigz | ssh 'cat > file'):
 * its own host key, its own user key and authorized_keys, all in a temporary folder. Nothing in
 * /etc/ssh or ~/.ssh is read or changed (apart from `mkdir -p /run/sshd`, which sshd requires).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, run, sleep, track } from './util.js';

interface SshTools {
  sshd: string;
  ssh: string;
  sshKeygen: string;
}

export interface PrivateSshd {
  port: number;
  /** The client private key (authorized for the current user). */
  key: string;
  /** ssh arguments up to (not including) the remote command: -p PORT -i KEY -o ... 127.0.0.1 */
  sshArgs: string[];
  stop(): Promise<void>;
  /** Synchronous best-effort kill, for exit handlers. */
  killSync(): void;
}

function ssh_options(port: number, key: string): string[] {
  return [
    '-F', '/dev/null', // ignore ~/.ssh/config and /etc/ssh/ssh_config: only the options below count
    '-p', String(port),
    '-i', key,
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
  ];
}

export async function startPrivateSshd(dir: string, tools: SshTools): Promise<PrivateSshd> {
  await mkdir(dir, { recursive: true });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const userKey = join(dir, 'id_ed25519');
  const authorizedKeys = join(dir, 'authorized_keys');
  const config = join(dir, 'sshd_config');
  const pidFile = join(dir, 'sshd.pid');

  for (const [file, comment] of [
    [hostKey, 'nbackup-bench-host'],
    [userKey, 'nbackup-bench-user'],
  ]) {
    const r = await run(tools.sshKeygen, ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`ssh-keygen failed (${r.code}): ${r.stderr.trim()}`);
  }
  await copyFile(`${userKey}.pub`, authorizedKeys);
  await chmod(authorizedKeys, 0o600);
  await chmod(dir, 0o700);

  // sshd needs its privilege separation directory; it is normally created by the service unit.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => undefined);

  const port = await freePort();
  await writeFile(
    config,
    [
      '# written by bench/sshd.ts',
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      'PermitRootLogin yes',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'StrictModes no',
      'UsePAM no',
      `PidFile ${pidFile}`,
      '',
    ].join('\n'),
  );

  const proc: ChildProcess = spawn(tools.sshd, ['-D', '-f', config, '-e'], { stdio: ['ignore', 'ignore', 'pipe'] });
  track(proc);
  let stderr = '';
  proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr = (stderr + c).slice(-8192);
  });
  let spawnError: Error | null = null;
  proc.once('error', (err) => (spawnError = err));
  const exited = () => proc.exitCode !== null || proc.signalCode !== null || spawnError !== null;

  const killSync = () => {
    if (!exited()) {
      try {
        proc.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  const stop = async () => {
    if (exited()) return;
    const gone = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGTERM');
    const t = setTimeout(killSync, 3000);
    await gone;
    clearTimeout(t);
  };

  const sshArgs = [...ssh_options(port, userKey), '127.0.0.1'];
  // Wait (bounded) until a login works.
  let lastErr = '';
  for (let attempt = 0; attempt < 50; attempt++) {
    if (exited()) break;
    const r = await run(tools.ssh, [...ssh_options(port, userKey), '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '127.0.0.1', 'true'], {
      timeoutMs: 15_000,
    });
    if (r.code === 0) return { port, key: userKey, sshArgs, stop, killSync };
    lastErr = r.stderr.trim();
    await sleep(attempt < 10 ? 100 : 300);
  }
  await stop();
  const why = spawnError ? `could not run ${tools.sshd}: ${(spawnError as Error).message}` : `sshd exited or never accepted a login`;
  throw new Error(`${why}\n--- sshd stderr ---\n${stderr.trim()}\n--- last ssh error ---\n${lastErr}`);
}

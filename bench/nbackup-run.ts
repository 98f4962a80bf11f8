/**
 * One nbackup run: a fresh server and storage folder, `nbackup-agent --config agent.yaml --once`
 * backing the folders up to it over TLS 1.3 mTLS on loopback, the peak RSS (VmHWM) of both
 * processes, and `gzip -t` of the one committed .tar.gz.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { parseLogLine, startServer, type ServerHandle } from './nbackup-server.js';
import type { Options } from './options.js';
import { AGENT_BIN } from './paths.js';
import type { BenchPki } from './pki.js';
import { Fatal, PeakRssPoller, STEP_TIMEOUT_MS, log, run } from './util.js';

export const AGENT_NAME = 'bench';
const BACKUP_NAME = 'bench';
const STORAGE_NAME = 'bench';

export interface NbackupSetup {
  pki: BenchPki;
  root: string;
}

export interface NbackupRun {
  seconds: number;
  outputBytes: number;
  agentPeakRss: number | null;
  serverPeakRss: number | null;
  /** The agent's gzip codec (libdeflate or zlib), from its log. */
  gzip: string | null;
  gzipTest: { ok: boolean; seconds: number; error?: string };
  /** From the agent's "backup committed" log line, when present. */
  tarBytes: number | null;
  files: number | null;
  warnings: number | null;
  file: string;
}

/** How the caller keeps track of the running server (for its cleanup) and learns of an interruption. */
interface RunHooks {
  onServer(server: ServerHandle | null): void;
  interrupted(): boolean;
}

export function modeLabel(parallels: number): string {
  return parallels === 0 ? '(single)' : `(parallels ${parallels})`;
}

function tail(text: string, lines = 40): string {
  return text.split('\n').filter((l) => l !== '').slice(-lines).join('\n');
}

/** Writes `value` as YAML to `path` (parent folders are created). */
async function writeYaml(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, stringify(value));
}

async function findBackups(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && e.name.endsWith('.tar.gz') && !e.name.startsWith('.')) found.push(p);
    }
  };
  await walk(dir);
  return found.sort();
}

function serverConfig(pki: BenchPki, storageDir: string): unknown {
  return {
    server: { listen: '127.0.0.1:0' },
    tls: { ca_cert: pki.caCert, server_cert: pki.serverCert, server_key: pki.serverKey },
    storages: { [STORAGE_NAME]: { base_dir: storageDir, max_backups: 1, min_free: '1mb' } },
    logging: { level: 'info', format: 'json' },
  };
}

function agentConfig(pki: BenchPki, port: number, dirs: string[], parallels: number): unknown {
  return {
    agent: { name: AGENT_NAME },
    server: { address: `127.0.0.1:${port}` },
    tls: { ca_cert: pki.caCert, client_cert: pki.agentCert, client_key: pki.agentKey },
    backups: [
      {
        name: BACKUP_NAME,
        storage: STORAGE_NAME,
        schedule: '0 2 * * *',
        parallels,
        auto_scaler: { enabled: false },
        sources: dirs.map((path) => ({ path })),
        exclude: [],
        compression: { level: 1 },
      },
    ],
    compression: { level: 1 },
    logging: { level: 'info', format: 'json' },
  };
}

/** Runs the agent once, polling its and the server's VmHWM every 50 ms. */
async function runAgent(agentYaml: string, serverPid: number | undefined) {
  let agentPid: number | undefined;
  const poller = new PeakRssPoller(() => [agentPid, serverPid].filter((p): p is number => p !== undefined), 50);
  let agentPeakRss: number | null = null;
  try {
    const r = await run(process.execPath, [AGENT_BIN, '--config', agentYaml, '--once'], {
      timeoutMs: STEP_TIMEOUT_MS,
      maxOutput: 4 << 20,
      onSpawn: (child: ChildProcess) => {
        agentPid = child.pid;
        poller.poll();
        child.once('exit', () => {
          agentPeakRss = poller.get(agentPid);
          agentPid = undefined; // never read a recycled pid
        });
      },
    });
    poller.poll(); // the server, after the agent's exit, before stopping it
    return { r, agentPeakRss: agentPeakRss as number | null, serverPeakRss: poller.get(serverPid) };
  } finally {
    poller.stop();
  }
}

export async function runNbackup(nb: NbackupSetup, opts: Options, parallels: number, runNo: number, hooks: RunHooks): Promise<NbackupRun> {
  const runDir = join(nb.root, `run${runNo}-p${parallels}`);
  const storageDir = join(runDir, 'storage');
  await mkdir(storageDir, { recursive: true });
  const serverYaml = join(runDir, 'server.yaml');
  const agentYaml = join(runDir, 'agent.yaml');
  await writeYaml(serverYaml, serverConfig(nb.pki, storageDir));
  const server = await startServer(serverYaml, 30_000);
  hooks.onServer(server);
  try {
    await writeYaml(agentYaml, agentConfig(nb.pki, server.port, opts.dirs, parallels));
    const { r, agentPeakRss, serverPeakRss } = await runAgent(agentYaml, server.proc.pid);

    if (r.code !== 0) {
      if (hooks.interrupted()) throw new Fatal('interrupted');
      process.stderr.write(
        `\nnbackup-agent failed (exit ${r.code ?? r.signal}) after ${r.seconds.toFixed(2)} s\n` +
          `--- agent stderr ---\n${tail(r.stderr, 60)}\n--- agent stdout (tail) ---\n${tail(r.stdout, 20)}\n` +
          `--- server output (tail) ---\n${server.output().slice(-20).join('\n')}\n`,
      );
      throw new Fatal('nbackup-agent did not exit 0');
    }

    let committed: Record<string, unknown> | null = null;
    let started: Record<string, unknown> | null = null;
    for (const line of (r.stdout + '\n' + r.stderr).split('\n')) {
      const l = parseLogLine(line);
      if (l && l.msg === 'backup committed') committed = l;
      if (l && l.msg === 'backup started') started = l;
    }
    const num = (v: unknown) => (typeof v === 'number' ? v : null);

    const backups = await findBackups(storageDir);
    if (backups.length !== 1) {
      throw new Fatal(`expected exactly one committed .tar.gz under ${storageDir}, found ${backups.length}: ${backups.join(', ')}`);
    }
    const file = backups[0];
    const outputBytes = (await stat(file)).size;

    const g = await run('gzip', ['-t', file], { timeoutMs: STEP_TIMEOUT_MS });
    const gzipTest = { ok: g.code === 0, seconds: g.seconds, ...(g.code === 0 ? {} : { error: tail(g.stderr, 5) || `exit ${g.code}` }) };
    if (!gzipTest.ok) log(`ERROR: gzip -t failed on ${file}: ${gzipTest.error}`);

    return {
      seconds: r.seconds,
      outputBytes,
      agentPeakRss,
      serverPeakRss,
      gzipTest,
      tarBytes: num(committed?.tarBytes),
      gzip: started && typeof started.gzip === 'string' ? started.gzip : null,
      files: num(committed?.files),
      warnings: num(committed?.warnings),
      file,
    };
  } finally {
    await server.stop(5000).catch(() => undefined);
    hooks.onServer(null);
    if (!opts.keep) await rm(storageDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

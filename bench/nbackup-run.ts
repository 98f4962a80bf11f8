/**
 * One nbackup run: a fresh server and storage folder, `nbackup-agent --config agent.yaml --once`
 * backing the folders up to it over TLS 1.3 mTLS on loopback in one archive format, the peak RSS
 * (VmHWM) and CPU seconds of both processes (the server's counted from the agent's start), and
 * `gzip -t` / `zstd -t` of the one committed archive.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { parseLogLine, startServer, type ServerHandle } from './nbackup-server.js';
import type { BenchFormat, Options } from './options.js';
import { AGENT_BIN } from './paths.js';
import type { BenchPki } from './pki.js';
import { Fatal, ProcPoller, STEP_TIMEOUT_MS, log, run } from './util.js';

export const AGENT_NAME = 'bench';
const BACKUP_NAME = 'bench';
const STORAGE_NAME = 'bench';

export interface NbackupSetup {
  pki: BenchPki;
  root: string;
}

/** One nbackup configuration of the benchmark: an archive format and a `parallels` value. */
export interface Mode {
  format: BenchFormat;
  parallels: number;
}

export interface NbackupRun {
  seconds: number;
  outputBytes: number;
  agentPeakRss: number | null;
  serverPeakRss: number | null;
  /** CPU seconds (user + system) of the agent process, and of the server during the agent's run. */
  agentCpu: number | null;
  serverCpu: number | null;
  /** The agent's engine and level (igzip 2, zstd 3, zlib 2 …), from its log. */
  engine: string | null;
  /** `gzip -t` or `zstd -t` of the archive. */
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
  /** Runs after the server is up, right before the agent starts (the page-cache warm-up). */
  beforeAgent(): Promise<void>;
}

export function modeLabel(m: Mode): string {
  return `${m.format} ${m.parallels === 0 ? 'single' : `p${m.parallels}`}`;
}

function tail(text: string, lines = 40): string {
  return text.split('\n').filter((l) => l !== '').slice(-lines).join('\n');
}

/** Writes `value` as YAML to `path` (parent folders are created). */
export async function writeYaml(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, stringify(value));
}

export async function findBackups(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && /\.tar\.(gz|zst)$/.test(e.name) && !e.name.startsWith('.')) found.push(p);
    }
  };
  await walk(dir);
  return found.sort();
}

export function serverConfig(pki: BenchPki, storageDir: string): unknown {
  return {
    server: { listen: '127.0.0.1:0' },
    tls: { ca_cert: pki.caCert, server_cert: pki.serverCert, server_key: pki.serverKey },
    storages: { [STORAGE_NAME]: { base_dir: storageDir, max_backups: 1, min_free: '1mb' } },
    logging: { level: 'info', format: 'json' },
  };
}

export function agentConfig(pki: BenchPki, port: number, dirs: string[], mode: Mode): unknown {
  return {
    agent: { name: AGENT_NAME },
    server: { address: `127.0.0.1:${port}` },
    tls: { ca_cert: pki.caCert, client_cert: pki.agentCert, client_key: pki.agentKey },
    backups: [
      {
        name: BACKUP_NAME,
        storage: STORAGE_NAME,
        schedule: '0 2 * * *',
        parallels: mode.parallels,
        auto_scaler: { enabled: false },
        sources: dirs.map((path) => ({ path })),
        exclude: [],
        // The format's default level: what an operator gets without choosing.
        compression: { format: mode.format },
      },
    ],
    logging: { level: 'info', format: 'json' },
  };
}

/** Runs the agent once, polling its and the server's VmHWM and CPU time every 20 ms. */
async function runAgent(agentYaml: string, serverPid: number | undefined) {
  let agentPid: number | undefined;
  const poller = new ProcPoller(() => [agentPid, serverPid].filter((p): p is number => p !== undefined), 20);
  const serverCpuBefore = poller.cpu(serverPid);
  let agentPeakRss: number | null = null;
  let agentCpu: number | null = null;
  try {
    const r = await run(process.execPath, [AGENT_BIN, '--config', agentYaml, '--once'], {
      timeoutMs: STEP_TIMEOUT_MS,
      maxOutput: 4 << 20,
      onSpawn: (child: ChildProcess) => {
        agentPid = child.pid;
        poller.poll();
        child.once('exit', () => {
          agentPeakRss = poller.get(agentPid);
          agentCpu = poller.cpu(agentPid);
          agentPid = undefined; // never read a recycled pid
        });
      },
    });
    poller.poll(); // the server, after the agent's exit, before stopping it
    const after = poller.cpu(serverPid);
    const serverCpu = after !== null && serverCpuBefore !== null ? after - serverCpuBefore : null;
    return { r, agentPeakRss: agentPeakRss as number | null, agentCpu: agentCpu as number | null, serverPeakRss: poller.get(serverPid), serverCpu };
  } finally {
    poller.stop();
  }
}

export async function runNbackup(nb: NbackupSetup, opts: Options, dirs: string[], mode: Mode, runNo: number, hooks: RunHooks): Promise<NbackupRun> {
  const runDir = join(nb.root, `run${runNo}-${mode.format}-p${mode.parallels}`);
  const storageDir = join(runDir, 'storage');
  await mkdir(storageDir, { recursive: true });
  const serverYaml = join(runDir, 'server.yaml');
  const agentYaml = join(runDir, 'agent.yaml');
  await writeYaml(serverYaml, serverConfig(nb.pki, storageDir));
  const server = await startServer(serverYaml, 30_000);
  hooks.onServer(server);
  try {
    await writeYaml(agentYaml, agentConfig(nb.pki, server.port, dirs, mode));
    await hooks.beforeAgent();
    const { r, agentPeakRss, agentCpu, serverPeakRss, serverCpu } = await runAgent(agentYaml, server.proc.pid);

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
      throw new Fatal(`expected exactly one committed archive under ${storageDir}, found ${backups.length}: ${backups.join(', ')}`);
    }
    const file = backups[0];
    const outputBytes = (await stat(file)).size;

    const g = await run(mode.format, ['-t', file], { timeoutMs: STEP_TIMEOUT_MS });
    const gzipTest = { ok: g.code === 0, seconds: g.seconds, ...(g.code === 0 ? {} : { error: tail(g.stderr, 5) || `exit ${g.code}` }) };
    if (!gzipTest.ok) log(`ERROR: ${mode.format} -t failed on ${file}: ${gzipTest.error}`);

    return {
      seconds: r.seconds,
      outputBytes,
      agentPeakRss,
      serverPeakRss,
      agentCpu,
      serverCpu,
      gzipTest,
      tarBytes: num(committed?.tarBytes),
      engine: started && typeof started.engine === 'string' ? `${started.engine} ${String(started.level)}` : null,
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

/**
 * Benchmark: nbackup (agent → server over TLS 1.3 mTLS on loopback) against the reference pipeline
 *
 *   tar -cf - DIRS | pigz -1 -p<cpus> | ssh 127.0.0.1 'cat > FILE'
 *
 * in the same run, on the same (page-cached) data. Run with `npm run bench [-- options]`:
 *
 *   --dir PATH       a folder to back up (repeatable; default /usr/share and /usr/lib/x86_64-linux-gnu)
 *   --runs N         repetitions (default 1); with N > 1 the medians are reported
 *   --parallels LIST the agent's backup entry `parallels`, one nbackup run per value in each
 *                    repetition, e.g. `--parallels 0,4` (default 0 = single stream; parallel runs
 *                    use all N streams from the start: auto_scaler off)
 *   --keep           keep the temporary folder (configs, keys, outputs)
 *
 * The reference needs pigz, sshd and ssh; when one is missing it is skipped with a notice. It uses a
 * private sshd (own keys and config in the temporary folder, a free loopback port).
 * The summary is printed and written to bench/results/latest.json.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus as osCpus, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { makePki } from '../test/helpers/pki.js';
import { AGENT_BIN, REPO_ROOT, parseLogLine, startServer, writeYaml, type ServerHandle } from '../test/helpers/proc.js';
import { makeTempDir, removeTempDir } from '../test/helpers/tmp.js';
import { startPrivateSshd, type PrivateSshd, type SshTools } from './sshd.js';
import {
  PeakRssPoller,
  findExecutable,
  fmtBytes,
  fmtMiB,
  fmtRate,
  fmtSeconds,
  killAllSync,
  median,
  ratio,
  run,
  shq,
  table,
  track,
} from './util.js';
import { spawn } from 'node:child_process';

const DEFAULT_DIRS = ['/usr/share', '/usr/lib/x86_64-linux-gnu'];
const STEP_TIMEOUT_MS = 3 * 3600 * 1000;
const AGENT_NAME = 'bench';
const BACKUP_NAME = 'bench';
const STORAGE_NAME = 'bench';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  dirs: string[];
  runs: number;
  parallels: number[];
  keep: boolean;
}

class UsageError extends Error {}

const USAGE = `usage: npm run bench -- [--dir PATH]... [--runs N] [--parallels N] [--keep]
  --dir PATH      folder to back up (repeatable; default ${DEFAULT_DIRS.join(' and ')})
  --runs N        repetitions, medians reported when N > 1 (default 1)
  --parallels L   comma-separated "parallels" values, one nbackup run each (default 0; e.g. 0,4)
  --keep          keep the temporary folder`;

function parseOptions(argv: string[]): Options {
  const dirs: string[] = [];
  let runs = 1;
  let parallels = [0];
  let keep = false;
  const intArg = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = v === undefined ? NaN : Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} expects an integer between ${min} and ${max}, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let inline: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const value = () => inline ?? argv[++i];
    switch (a) {
      case '--dir': {
        const v = value();
        if (!v) throw new UsageError('--dir expects a path');
        dirs.push(resolve(v));
        break;
      }
      case '--runs':
        runs = intArg('--runs', value(), 1, 1000);
        break;
      case '--parallels':
        parallels = (value() ?? '').split(',').map((v) => intArg('--parallels', v, 0, 255));
        break;
      case '--keep':
        keep = true;
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
      // eslint-disable-next-line no-fallthrough
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  return { dirs: dirs.length > 0 ? dirs : DEFAULT_DIRS, runs, parallels, keep };
}

// ---------------------------------------------------------------------------------------------
// Cleanup on every exit path

class Fatal extends Error {}

const state: {
  tempRoot: string | null;
  keep: boolean;
  sshd: PrivateSshd | null;
  server: ServerHandle | null;
  /** Set once cleanup has started (a failure seen after that is a consequence of the interruption). */
  cleaning: boolean;
  cleaned: boolean;
} = { tempRoot: null, keep: false, sshd: null, server: null, cleaning: false, cleaned: false };

let cleanupPromise: Promise<void> | null = null;

/** Stops the server and sshd, kills leftover children, removes the temporary folder. Idempotent. */
function cleanup(): Promise<void> {
  cleanupPromise ??= (async () => {
    state.cleaning = true;
    killAllSync(); // running agent / pipeline / warm-up first, so that nothing reacts to the server going away
    if (state.server) await state.server.stop(3000).catch(() => undefined);
    state.server = null;
    if (state.sshd) await state.sshd.stop().catch(() => undefined);
    state.sshd = null;
    killAllSync();
    if (state.tempRoot) {
      if (state.keep) process.stderr.write(`kept temporary folder: ${state.tempRoot}\n`);
      else await removeTempDir(state.tempRoot).catch((err: unknown) => process.stderr.write(`could not remove ${state.tempRoot}: ${String(err)}\n`));
    }
    state.cleaned = true;
  })();
  return cleanupPromise;
}

process.on('exit', () => {
  // Last resort (process.exit from anywhere): nothing asynchronous can run here.
  killAllSync();
  state.sshd?.killSync();
  try {
    state.server?.proc.kill('SIGKILL');
  } catch {
    /* gone */
  }
  if (!state.cleaned && state.tempRoot && !state.keep) {
    try {
      rmSync(state.tempRoot, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
});

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping and cleaning up...\n`);
    void cleanup().finally(() => process.exit(code));
  });
}

// ---------------------------------------------------------------------------------------------
// Steps

function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}

async function duBytes(dirs: string[]): Promise<{ total: number; perDir: Record<string, number> }> {
  const r = await run('du', ['-sb', ...dirs], { timeoutMs: STEP_TIMEOUT_MS });
  if (r.code !== 0) log(`warning: du -sb exited with ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const perDir: Record<string, number> = {};
  let total = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+)\t(.*)$/.exec(line);
    if (!m) continue;
    perDir[m[2]] = Number(m[1]);
    total += Number(m[1]);
  }
  return { total, perDir };
}

/** Reads all data once (`tar -cf - DIRS`, output counted and discarded) so both sides read from the page cache. */
function warmCache(tar: string, dirs: string[]): Promise<{ tarBytes: number; seconds: number }> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(tar, ['-cf', '-', ...dirs], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (bytes += c.length));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-8192)));
    child.once('error', reject);
    child.once('close', (code) => {
      const noise = stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !/Removing leading/.test(l));
      if (code !== 0) reject(new Fatal(`warm-up tar exited with ${code}:\n${noise.slice(-20).join('\n')}`));
      else {
        if (noise.length > 0) log(`warm-up tar warnings:\n${noise.slice(-10).join('\n')}`);
        resolvePromise({ tarBytes: bytes, seconds: (performance.now() - started) / 1000 });
      }
    });
  });
}

interface ReferenceSetup {
  sshd: PrivateSshd;
  tar: string;
  pigz: string;
  ssh: string;
  cpus: number;
  outDir: string;
}

interface ReferenceRun {
  seconds: number;
  outputBytes: number;
  command: string;
}

async function runReference(ref: ReferenceSetup, dirs: string[], runNo: number, keep: boolean): Promise<ReferenceRun> {
  const out = join(ref.outDir, `reference-run${runNo}.tar.gz`);
  const remote = `cat > ${shq(out)}`;
  const command =
    `${shq(ref.tar)} -cf - ${dirs.map(shq).join(' ')}` +
    ` | ${shq(ref.pigz)} -1 -p${ref.cpus}` +
    ` | ${[ref.ssh, ...ref.sshd.sshArgs].map(shq).join(' ')} ${shq(remote)}`;
  const r = await run('bash', ['-o', 'pipefail', '-c', command], { group: true, timeoutMs: STEP_TIMEOUT_MS });
  if (r.code !== 0) {
    const noise = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/Removing leading/.test(l));
    throw new Fatal(`reference pipeline failed (exit ${r.code ?? r.signal}):\n${command}\n${noise.slice(-20).join('\n')}`);
  }
  const outputBytes = (await stat(out)).size;
  if (!keep) await rm(out, { force: true });
  return { seconds: r.seconds, outputBytes, command };
}

interface NbackupSetup {
  pki: Awaited<ReturnType<typeof makePki>>;
  root: string;
}

interface NbackupRun {
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

function modeLabel(parallels: number): string {
  return parallels === 0 ? '(single)' : `(parallels ${parallels})`;
}

function tail(text: string, lines = 40): string {
  return text.split('\n').filter((l) => l !== '').slice(-lines).join('\n');
}

async function runNbackup(nb: NbackupSetup, opts: Options, parallels: number, runNo: number): Promise<NbackupRun> {
  const runDir = join(nb.root, `run${runNo}-p${parallels}`);
  const storageDir = join(runDir, 'storage');
  await mkdir(storageDir, { recursive: true });
  const serverYaml = join(runDir, 'server.yaml');
  const agentYaml = join(runDir, 'agent.yaml');
  await writeYaml(serverYaml, {
    server: { listen: '127.0.0.1:0' },
    tls: { ca_cert: nb.pki.caCert, server_cert: nb.pki.serverCert, server_key: nb.pki.serverKey },
    storages: { [STORAGE_NAME]: { base_dir: storageDir, max_backups: 1, min_free: '1mb' } },
    logging: { level: 'info', format: 'json' },
  });
  const server = await startServer(serverYaml, { timeoutMs: 30_000 });
  state.server = server;
  try {
    await writeYaml(agentYaml, {
      agent: { name: AGENT_NAME },
      server: { address: `127.0.0.1:${server.port}` },
      tls: { ca_cert: nb.pki.caCert, client_cert: nb.pki.agents[AGENT_NAME].cert, client_key: nb.pki.agents[AGENT_NAME].key },
      backups: [
        {
          name: BACKUP_NAME,
          storage: STORAGE_NAME,
          schedule: '0 2 * * *',
          parallels,
          auto_scaler: { enabled: false },
          sources: opts.dirs.map((path) => ({ path })),
          exclude: [],
          compression: { level: 1 },
        },
      ],
      compression: { level: 1 },
      logging: { level: 'info', format: 'json' },
    });

    const serverPid = server.proc.pid;
    let agentPid: number | undefined;
    const poller = new PeakRssPoller(() => [agentPid, serverPid].filter((p): p is number => p !== undefined), 50);
    let agentPeakRss: number | null = null;
    let r;
    try {
      r = await run(process.execPath, [AGENT_BIN, '--config', agentYaml, '--once'], {
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
    } finally {
      poller.stop();
    }
    const serverPeakRss = poller.get(serverPid);

    if (r.code !== 0) {
      if (state.cleaning) throw new Fatal('interrupted');
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
    state.server = null;
    if (!opts.keep) await rm(storageDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function toolVersion(cmd: string, args: string[]): Promise<string | null> {
  try {
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    return (r.stdout + r.stderr).trim().split('\n')[0] || null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Main

interface RunRecord {
  run: number;
  order: 'reference-first' | 'nbackup-first';
  reference: ReferenceRun | null;
  /** One nbackup run per `--parallels` value, in that order. */
  nbackup: NbackupRun[];
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
  state.keep = opts.keep;
  for (const d of opts.dirs) {
    const st = await stat(d).catch(() => null);
    if (!st?.isDirectory()) throw new Fatal(`--dir ${d}: not a folder`);
  }

  const cpus = availableParallelism();
  const tar = findExecutable('tar');
  if (!tar) throw new Fatal('tar is required (for the warm-up and the reference)');

  // Reference prerequisites.
  const pigz = findExecutable('pigz');
  const sshdBin = findExecutable('sshd', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
  const sshBin = findExecutable('ssh');
  const sshKeygen = findExecutable('ssh-keygen');
  const missing = [
    ['pigz', pigz],
    ['sshd', sshdBin],
    ['ssh', sshBin],
    ['ssh-keygen', sshKeygen],
  ]
    .filter(([, p]) => !p)
    .map(([n]) => n);
  let referenceSkipped: string | null = null;
  if (missing.length > 0) {
    referenceSkipped = `missing ${missing.join(', ')}`;
    process.stderr.write(`\nNOTICE: reference pipeline (tar | pigz | ssh) SKIPPED: ${referenceSkipped}. Only nbackup's figures are reported.\n\n`);
  }

  state.tempRoot = await makeTempDir('nbackup-bench-');
  log(`temporary folder: ${state.tempRoot}`);

  const versions = {
    node: process.version,
    tar: await toolVersion(tar, ['--version']),
    pigz: pigz ? await toolVersion(pigz, ['--version']) : null,
    ssh: sshBin ? await toolVersion(sshBin, ['-V']) : null,
  };

  // Reference setup: a private sshd.
  let ref: ReferenceSetup | null = null;
  if (!referenceSkipped) {
    try {
      const sshd = await startPrivateSshd(join(state.tempRoot, 'ssh'), { sshd: sshdBin!, ssh: sshBin!, sshKeygen: sshKeygen! } satisfies SshTools);
      state.sshd = sshd;
      const outDir = join(state.tempRoot, 'reference');
      await mkdir(outDir, { recursive: true });
      ref = { sshd, tar, pigz: pigz!, ssh: sshBin!, cpus, outDir };
      log(`private sshd listening on 127.0.0.1:${sshd.port}`);
    } catch (err) {
      referenceSkipped = `the private sshd could not be started: ${err instanceof Error ? err.message : String(err)}`;
      process.stderr.write(`\nNOTICE: reference pipeline SKIPPED: ${referenceSkipped}\n\n`);
    }
  }

  // nbackup setup.
  const nbRoot = join(state.tempRoot, 'nbackup');
  const pki = await makePki(join(nbRoot, 'pki'), { agents: [AGENT_NAME] });
  const nb: NbackupSetup = { pki, root: nbRoot };

  log(`measuring input (du -sb ${opts.dirs.join(' ')})...`);
  const du = await duBytes(opts.dirs);
  log(`warming the page cache (tar -cf - ... > /dev/null)...`);
  const warm = await warmCache(tar, opts.dirs);
  log(`warm-up: ${fmtBytes(warm.tarBytes)} tar stream in ${warm.seconds.toFixed(2)} s`);

  const records: RunRecord[] = [];
  let gzipFailures = 0;
  for (let i = 1; i <= opts.runs; i++) {
    const order: RunRecord['order'] = i % 2 === 1 ? 'reference-first' : 'nbackup-first';
    let reference: ReferenceRun | null = null;
    const nbackup: NbackupRun[] = [];
    const doRef = async () => {
      if (!ref) return;
      log(`run ${i}/${opts.runs}: reference...`);
      reference = await runReference(ref, opts.dirs, i, opts.keep);
      log(`run ${i}/${opts.runs}: reference ${fmtSeconds(reference.seconds)}, ${fmtBytes(reference.outputBytes)}`);
    };
    const doNb = async () => {
      for (const p of opts.parallels) {
        const label = modeLabel(p);
        log(`run ${i}/${opts.runs}: nbackup ${label}...`);
        const r = await runNbackup(nb, opts, p, i);
        nbackup.push(r);
        log(
          `run ${i}/${opts.runs}: nbackup ${label} ${fmtSeconds(r.seconds)}, ${fmtBytes(r.outputBytes)}, ` +
            `agent ${fmtMiB(r.agentPeakRss)}, server ${fmtMiB(r.serverPeakRss)}, gzip -t ${r.gzipTest.ok ? 'OK' : 'FAILED'}`,
        );
      }
    };
    if (order === 'reference-first') {
      await doRef();
      await doNb();
    } else {
      await doNb();
      await doRef();
    }
    gzipFailures += nbackup.filter((r) => !r.gzipTest.ok).length;
    records.push({ run: i, order, reference, nbackup });
  }

  // Summary.
  const inputBytes = warm.tarBytes;
  const refSec = median(records.map((r) => r.reference?.seconds));
  const refOut = median(records.map((r) => r.reference?.outputBytes));
  const modes = opts.parallels.map((p, k) => {
    const runs = records.map((r) => r.nbackup[k]);
    const seconds = median(runs.map((r) => r.seconds));
    const outputBytes = median(runs.map((r) => r.outputBytes));
    return {
      parallels: p,
      label: modeLabel(p),
      runs,
      seconds,
      outputBytes,
      agentRss: median(runs.map((r) => r.agentPeakRss)),
      serverRss: median(runs.map((r) => r.serverPeakRss)),
      gzipSec: median(runs.map((r) => r.gzipTest.seconds)),
      gzipOk: runs.every((r) => r.gzipTest.ok),
      timeRatio: ratio(seconds, refSec),
      sizeRatio: ratio(outputBytes, refOut),
    };
  });
  const last = records[records.length - 1].nbackup[0];
  const med = opts.runs > 1 ? ` (median of ${opts.runs})` : '';

  const lines: string[] = [];
  lines.push('');
  lines.push('================ nbackup benchmark ================');
  lines.push(`date        ${new Date().toISOString()}`);
  lines.push(`machine     ${cpus} CPUs (${osCpus()[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}, node ${process.version}`);
  lines.push(`dirs        ${opts.dirs.join(' ')}`);
  lines.push(`input       tar stream ${fmtBytes(inputBytes)}; du -sb ${fmtBytes(du.total)}${last.files !== null ? `; ${last.files.toLocaleString('en-US')} entries (agent)` : ''}`);
  lines.push(`settings    runs ${opts.runs}, parallels ${opts.parallels.join(',')}, gzip level 1 on both sides, page cache warmed (${warm.seconds.toFixed(1)} s)`);
  lines.push(
    ref
      ? `reference   tar -cf - DIRS | pigz -1 -p${cpus} | ssh -p ${ref.sshd.port} ... 127.0.0.1 'cat > FILE'   (${versions.ssh ?? 'ssh ?'})`
      : `reference   SKIPPED: ${referenceSkipped}`,
  );
  lines.push(`nbackup     node dist/cmd/nbackup-agent.js --once → nbackup-server, TLS 1.3 mTLS on 127.0.0.1, gzip: ${last.gzip ?? '?'}`);
  lines.push('');
  lines.push(
    table(
      ['', 'reference (tar|pigz|ssh)', ...modes.map((m) => `nbackup ${m.label}`)],
      [
        [`wall time${med}`, ref ? fmtSeconds(refSec) : 'skipped', ...modes.map((m) => fmtSeconds(m.seconds))],
        ['time / reference', ref ? '1.00x' : '-', ...modes.map((m) => (m.timeRatio !== null ? `${m.timeRatio.toFixed(2)}x` : '-'))],
        ['throughput (tar input)', ref ? fmtRate(inputBytes, refSec) : '-', ...modes.map((m) => fmtRate(inputBytes, m.seconds))],
        [`output size${med}`, ref ? fmtBytes(refOut) : '-', ...modes.map((m) => fmtBytes(m.outputBytes))],
        [
          'compression ratio',
          ref && refOut ? `${((refOut / inputBytes) * 100).toFixed(1)} %` : '-',
          ...modes.map((m) => (m.outputBytes ? `${((m.outputBytes / inputBytes) * 100).toFixed(1)} %` : '-')),
        ],
        ['agent peak RSS (VmHWM)', '-', ...modes.map((m) => fmtMiB(m.agentRss))],
        ['server peak RSS (VmHWM)', '-', ...modes.map((m) => fmtMiB(m.serverRss))],
        ['gzip -t of the backup', '-', ...modes.map((m) => `${m.gzipOk ? 'OK' : 'FAILED'} (${fmtSeconds(m.gzipSec)}, untimed)`)],
      ],
    ),
  );
  lines.push('');
  for (const m of modes) {
    lines.push(
      m.timeRatio !== null
        ? `ratio nbackup ${m.label}/reference: time ${m.timeRatio.toFixed(2)}x (${m.timeRatio > 1 ? `nbackup ${((m.timeRatio - 1) * 100).toFixed(0)} % slower` : `nbackup ${((1 - m.timeRatio) * 100).toFixed(0)} % faster`}), output size ${m.sizeRatio?.toFixed(3) ?? '-'}x`
        : `ratio nbackup ${m.label}/reference: - (reference skipped)`,
    );
  }
  if (last.tarBytes !== null && last.tarBytes !== inputBytes) {
    lines.push(`note: the agent's tar stream was ${fmtBytes(last.tarBytes)} (GNU tar's: ${fmtBytes(inputBytes)})`);
  }
  if (last.warnings) lines.push(`note: the agent reported ${last.warnings} warning(s) while reading the sources`);
  if (opts.runs > 1 || modes.length > 1) {
    lines.push('');
    lines.push('per run:');
    lines.push(
      table(
        ['run', 'order', 'mode', 'ref time', 'nbackup time', 'ratio', 'ref output', 'nbackup output', 'agent RSS', 'server RSS', 'gzip -t'],
        records.flatMap((r) =>
          modes.map((m, k) => {
            const n = r.nbackup[k];
            return [
              String(r.run),
              r.order,
              m.label,
              fmtSeconds(r.reference?.seconds ?? null),
              fmtSeconds(n.seconds),
              ratio(n.seconds, r.reference?.seconds ?? null)?.toFixed(2) ?? '-',
              r.reference ? r.reference.outputBytes.toLocaleString('en-US') : '-',
              n.outputBytes.toLocaleString('en-US'),
              fmtMiB(n.agentPeakRss),
              fmtMiB(n.serverPeakRss),
              n.gzipTest.ok ? 'OK' : 'FAILED',
            ];
          }),
        ),
      ),
    );
  }
  lines.push('===================================================');
  process.stdout.write(lines.join('\n') + '\n');

  const summary = {
    date: new Date().toISOString(),
    machine: { cpus, cpuModel: osCpus()[0]?.model.trim() ?? null, totalMemBytes: totalmem(), kernel: release() },
    versions,
    options: opts,
    input: { tarStreamBytes: inputBytes, duBytes: du.total, duPerDir: du.perDir, warmupSeconds: warm.seconds, files: last.files },
    reference: ref
      ? {
          command: `tar -cf - DIRS | pigz -1 -p${cpus} | ssh -p PORT -i KEY -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR 127.0.0.1 'cat > OUTFILE'`,
          seconds: refSec,
          outputBytes: refOut,
          mbPerS: refSec ? inputBytes / 1e6 / refSec : null,
        }
      : { skipped: referenceSkipped },
    nbackup: modes.map((m) => ({
      parallels: m.parallels,
      seconds: m.seconds,
      outputBytes: m.outputBytes,
      mbPerS: m.seconds ? inputBytes / 1e6 / m.seconds : null,
      agentPeakRssBytes: m.agentRss,
      serverPeakRssBytes: m.serverRss,
      gzipTestOk: m.gzipOk,
      gzipTestSeconds: m.gzipSec,
      ratio: { time: m.timeRatio, outputSize: m.sizeRatio },
    })),
    runs: records.map((r) => ({
      run: r.run,
      order: r.order,
      reference: r.reference ? { seconds: r.reference.seconds, outputBytes: r.reference.outputBytes } : null,
      nbackup: r.nbackup.map((n, k) => ({
        parallels: opts.parallels[k],
        seconds: n.seconds,
        outputBytes: n.outputBytes,
        agentPeakRssBytes: n.agentPeakRss,
        serverPeakRssBytes: n.serverPeakRss,
        gzipTest: n.gzipTest,
        tarBytes: n.tarBytes,
        files: n.files,
        warnings: n.warnings,
        ratio: ratio(n.seconds, r.reference?.seconds ?? null),
      })),
    })),
  };
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  const jsonPath = join(resultsDir, 'latest.json');
  await writeFile(jsonPath, JSON.stringify(summary, null, 2) + '\n');
  log(`summary written to ${jsonPath}`);

  return gzipFailures === 0 ? 0 : 1;
}

main()
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    if (state.cleaning) return; // interrupted: the signal handler cleans up and exits
    process.stderr.write(`\nbench failed: ${err instanceof Fatal ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanup();
    process.exit(1);
  });

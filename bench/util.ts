/**
 * Small helpers for the benchmark: progress log, the fatal error, command lookup, shell quoting,
 * running commands, peak-RSS polling, free ports, medians and number formatting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';

/** Bound on any one step (du, warm-up, a reference or nbackup run, gzip -t). */
export const STEP_TIMEOUT_MS = 3 * 3600 * 1000;

/** An error that ends the benchmark with its message only (no stack). */
export class Fatal extends Error {}

/** A progress line on stderr (stdout carries the summary). */
export function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}

/** Absolute path of `name` if it is an executable on PATH (or an absolute path that is executable). */
export function findExecutable(name: string, extraDirs: string[] = []): string | null {
  const candidates = name.includes('/')
    ? [name]
    : [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...extraDirs].map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return null;
}

/** Quotes one word for bash. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_\-./=:@%+,]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

interface CmdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Children started here that must not outlive the benchmark (killed by killAllSync). */
const live = new Set<ChildProcess>();

export function track(child: ChildProcess, group = false): void {
  (child as ChildProcess & { _benchGroup?: boolean })._benchGroup = group;
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Kills every tracked child that is still running (its whole process group when it has one). */
export function killAllSync(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const c of live) {
    if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) continue;
    try {
      if ((c as ChildProcess & { _benchGroup?: boolean })._benchGroup) process.kill(-c.pid, signal);
      else c.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * Runs a command to completion, collecting its output (capped at maxOutput chars per stream, the
 * tail is kept) and its wall-clock time from spawn to exit. With `group`, the command gets its own
 * process group so that a pipeline can be killed as a whole. Never rejects for a non-zero exit.
 */
export function run(
  command: string,
  args: string[],
  opts: { group?: boolean; timeoutMs?: number; maxOutput?: number; onSpawn?: (child: ChildProcess) => void } = {},
): Promise<CmdResult> {
  const maxOutput = opts.maxOutput ?? 1 << 20;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: !!opts.group });
    track(child, !!opts.group);
    let stdout = '';
    let stderr = '';
    const cap = (s: string) => (s.length > maxOutput ? s.slice(s.length - maxOutput) : s);
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout = cap(stdout + c)));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = cap(stderr + c)));
    let exitedAt = 0;
    child.once('exit', () => (exitedAt = performance.now()));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        try {
          if (opts.group && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
          else child.kill('SIGKILL');
        } catch {
          /* gone */
        }
      }, opts.timeoutMs);
    }
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: ((exitedAt || performance.now()) - started) / 1000 });
    });
    opts.onSpawn?.(child);
  });
}

/** The first line of `cmd args` output (e.g. a --version), or null if it cannot be run. */
export async function toolVersion(cmd: string, args: string[]): Promise<string | null> {
  try {
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    return (r.stdout + r.stderr).trim().split('\n')[0] || null;
  } catch {
    return null;
  }
}

/** VmHWM (peak resident set size) of a process in bytes, or null when it cannot be read (gone / zombie). */
function readPeakRss(pid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ: 100 on Linux for x86 and arm). */
const USER_HZ = 100;

/** CPU seconds (user + system, all threads) a process has used, or null when it cannot be read. */
function readCpuSeconds(pid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
}

/**
 * Polls the VmHWM and the CPU seconds of a set of processes every intervalMs, keeping the last
 * value seen for each (a process that exits between two polls loses at most one interval of CPU).
 */
export class ProcPoller {
  private readonly rss = new Map<number, number>();
  private readonly cpuSeconds = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pids: () => number[],
    intervalMs = 50,
  ) {
    this.poll();
    this.timer = setInterval(() => this.poll(), intervalMs);
  }

  poll(): void {
    for (const pid of this.pids()) {
      const v = readPeakRss(pid);
      if (v !== null) this.rss.set(pid, v);
      const c = readCpuSeconds(pid);
      if (c !== null) this.cpuSeconds.set(pid, c);
    }
  }

  get(pid: number | undefined): number | null {
    return pid === undefined ? null : (this.rss.get(pid) ?? null);
  }

  cpu(pid: number | undefined): number | null {
    return pid === undefined ? null : (this.cpuSeconds.get(pid) ?? null);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('could not find a free port'))));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Median of the non-null values (mean of the middle two for an even count); null if none. */
export function median(values: (number | null | undefined)[]): number | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

const MIB = 1024 * 1024;

export function fmtMiB(bytes: number | null): string {
  return bytes === null ? '-' : `${(bytes / MIB).toFixed(1)} MiB`;
}

/** Bytes with thousands separators plus a short human form: "1,234,567,890 (1.23 GB)". */
export function fmtBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  const human =
    bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes.toLocaleString('en-US')} (${human})`;
}

export function fmtSeconds(s: number | null): string {
  return s === null ? '-' : `${s.toFixed(2)} s`;
}

export function fmtRate(bytes: number | null, seconds: number | null): string {
  return bytes === null || seconds === null || seconds <= 0 ? '-' : `${(bytes / 1e6 / seconds).toFixed(1)} MB/s`;
}

export function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

/** Renders rows as a left-aligned text table with a header underline. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

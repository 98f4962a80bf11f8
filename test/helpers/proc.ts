/**
 * Runs the real CLIs (dist/cmd/nbackup-server.js, dist/cmd/nbackup-agent.js) as child processes.
 * Every wait is bounded; children still alive when the test process exits are SIGKILLed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { parseLogLine, type LogLine } from '../../src/log/parse-line.js';
import { Waiters } from './wait.js';

export { parseLogLine, type LogLine };

/** Repository root: this file is compiled to dist/test/helpers/proc.js. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/**
 * The CLIs under test. NBACKUP_BIN_DIR points the tests at another build's dist/cmd (to show
 * that a test fails against an older commit, for instance).
 */
const BIN_DIR = process.env.NBACKUP_BIN_DIR ?? join(REPO_ROOT, 'dist', 'cmd');
export const SERVER_BIN = join(BIN_DIR, 'nbackup-server.js');
export const AGENT_BIN = join(BIN_DIR, 'nbackup-agent.js');


const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function register(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

function isExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when the child has exited, or after timeoutMs (resolving false). */
function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (isExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Splits a stream into lines, calling onLine for each complete one (and the remainder at end). */
function lines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void {
  if (!stream) return;
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i).replace(/\r$/, ''));
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => {
    if (buf.length > 0) onLine(buf);
    buf = '';
  });
}


export interface LoggedProcess {
  proc: ChildProcess;
  /** JSON log lines seen so far (stdout and stderr), in arrival order. */
  logs(): LogLine[];
  /** Raw output lines so far, prefixed "out| " / "err| ". */
  output(): string[];
  /** Resolves with the first log line (past or future) matching pred; rejects on timeout or exit. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit status once the process has exited; rejects after timeoutMs. */
  waitForExit(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after graceMs (default 5000); resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
}

/** Spawns `command args` and collects its output lines and JSON log lines. */
export function spawnLogged(command: string, args: string[], opts: SpawnOptions = {}): LoggedProcess {
  const proc = spawn(command, args, {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  register(proc);
  const logs: LogLine[] = [];
  const out: string[] = [];
  const waiters = new Waiters();
  const onLine = (prefix: string) => (line: string) => {
    out.push(prefix + line);
    const parsed = parseLogLine(line);
    if (parsed) logs.push(parsed);
    waiters.notify();
  };
  lines(proc.stdout, onLine('out| '));
  lines(proc.stderr, onLine('err| '));
  let spawnError: Error | undefined;
  proc.on('error', (err) => {
    spawnError = err;
    out.push(`spawn error: ${err.message}`);
    waiters.notify();
  });
  // 'close' comes after the stdio streams have ended, so every line has been seen.
  let closed = isExited(proc);
  proc.once('close', () => {
    closed = true;
    waiters.notify();
  });

  const describe = () => {
    const status = isExited(proc) ? ` (exited: code ${proc.exitCode}, signal ${proc.signalCode})` : '';
    return `${command} ${args.join(' ')}${status}\n--- output ---\n${out.slice(-200).join('\n')}`;
  };

  const waitForLog = async (pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => {
    let seen = 0;
    let found: LogLine | undefined;
    await waiters.until(
      () => {
        for (; seen < logs.length; seen++) {
          if (pred(logs[seen])) {
            found = logs[seen];
            return true;
          }
        }
        if (closed || spawnError) throw new Error(`process ended before the expected log line\n${describe()}`);
        return false;
      },
      timeoutMs,
      'a log line',
      () => `\n${describe()}`,
    );
    return found as LogLine;
  };

  const waitForExit = async (timeoutMs = 10_000) => {
    const ok = await waitExit(proc, timeoutMs);
    if (!ok) throw new Error(`timed out after ${timeoutMs} ms waiting for exit\n${describe()}`);
    return { code: proc.exitCode, signal: proc.signalCode };
  };

  const stop = async (graceMs = 5000): Promise<void> => {
    if (isExited(proc) || spawnError) return;
    proc.kill('SIGTERM');
    if (await waitExit(proc, graceMs)) return;
    proc.kill('SIGKILL');
    if (!(await waitExit(proc, 5000))) throw new Error(`process ${proc.pid} survived SIGKILL\n${describe()}`);
  };

  return { proc, logs: () => logs, output: () => out, waitForLog, waitForExit, stop };
}

export interface ServerHandle extends LoggedProcess {
  /** The port from the server's `{"msg":"listening","port":N}` log line. */
  port: number;
}

export interface StartServerOptions extends SpawnOptions {
  /** Extra CLI arguments after `--config path`. */
  args?: string[];
  /** How long to wait for the "listening" log line (default 10 000 ms). */
  timeoutMs?: number;
  /** Script to run instead of dist/cmd/nbackup-server.js (for self-tests). */
  script?: string;
  /** A command the server runs under, e.g. ['unshare', '--mount', …] (it must exec the rest, not fork). */
  wrapper?: string[];
}

/**
 * Spawns `node dist/cmd/nbackup-server.js --config <configPath>` from the repo root and resolves
 * once it logs `{"msg":"listening","port":<number>}`. On timeout or early exit, the process is
 * killed and the promise rejects with everything it printed.
 */
export async function startServer(configPath: string, opts: StartServerOptions = {}): Promise<ServerHandle> {
  const script = opts.script ?? SERVER_BIN;
  const argv = [process.execPath, script, '--config', configPath, ...(opts.args ?? [])];
  const [command, ...args] = [...(opts.wrapper ?? []), ...argv];
  const p = spawnLogged(command, args, opts);
  try {
    const line = await p.waitForLog(
      (l) => l.msg === 'listening' && typeof l.port === 'number',
      opts.timeoutMs ?? 10_000,
    );
    return { ...p, port: line.port as number };
  } catch (err) {
    await p.stop(1000).catch(() => undefined);
    throw err;
  }
}

export interface AgentResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** JSON log lines from stdout and stderr. */
  logs: LogLine[];
  /** True if the agent was killed because it ran past timeoutMs. */
  timedOut: boolean;
  durationMs: number;
}

export interface RunAgentOptions extends SpawnOptions {
  /** Kill (SIGKILL) the agent after this long (default 60 000 ms). */
  timeoutMs?: number;
  /** Script to run instead of dist/cmd/nbackup-agent.js (for self-tests). */
  script?: string;
}

/** Runs `node dist/cmd/nbackup-agent.js ...args` to completion (or until timeoutMs). Never rejects for a non-zero exit. */
export function runAgent(args: string[], opts: RunAgentOptions = {}): Promise<AgentResult> {
  const script = opts.script ?? AGENT_BIN;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [script, ...args], {
      cwd: opts.cwd ?? REPO_ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    register(proc);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    proc.stdout?.on('data', (c: Buffer) => stdout.push(c));
    proc.stderr?.on('data', (c: Buffer) => stderr.push(c));
    let timedOut = false;
    let settled = false;
    // The upper bound: an agent that runs past timeoutMs is killed.
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
      // If even 'close' never comes (stdio held open by a grandchild), give up after 5 s more.
      setTimeout(() => finish(), 5000).unref();
    }, timeoutMs);
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const out = Buffer.concat(stdout).toString('utf8');
      const err = Buffer.concat(stderr).toString('utf8');
      const logs: LogLine[] = [];
      for (const line of (out + '\n' + err).split('\n')) {
        const l = parseLogLine(line);
        if (l) logs.push(l);
      }
      resolve({
        code: proc.exitCode,
        signal: proc.signalCode,
        stdout: out,
        stderr: err,
        logs,
        timedOut,
        durationMs: Date.now() - started,
      });
    };
    proc.once('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', finish);
  });
}

/** Writes `value` as YAML to `path` (parent directories are created). */
export async function writeYaml(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, stringify(value));
}

/**
 * One nbackup-server for the benchmark: `node dist/cmd/nbackup-server.js --config FILE`, started
 * from the repository root, ready once it logs `{"msg":"listening","port":N}` (bounded wait).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseLogLine, type LogLine } from '../src/log/parse-line.js';
import { REPO_ROOT, SERVER_BIN } from './paths.js';

export { parseLogLine };

/** Output lines kept for error reports. */
const KEEP_LINES = 200;


export interface ServerHandle {
  proc: ChildProcess;
  /** The port from the `listening` log line. */
  port: number;
  /** The last output lines, prefixed "out| " / "err| ". */
  output(): string[];
  /** SIGTERM, then SIGKILL after graceMs (default 5000); resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** Synchronous SIGKILL, for exit handlers. */
  killSync(): void;
}

function exited(proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Resolves true once the process has exited, or false after timeoutMs. */
function waitExit(proc: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(proc)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      proc.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    proc.once('exit', onExit);
  });
}

/**
 * Starts the server and resolves once it listens. On a timeout or an early exit the process is
 * killed and the promise rejects with what it printed.
 */
export async function startServer(configPath: string, timeoutMs = 10_000): Promise<ServerHandle> {
  const proc = spawn(process.execPath, [SERVER_BIN, '--config', configPath], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  let spawnError: Error | null = null;

  const killSync = () => {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* gone */
    }
  };
  const stop = async (graceMs = 5000): Promise<void> => {
    if (exited(proc) || spawnError) return;
    proc.kill('SIGTERM');
    if (await waitExit(proc, graceMs)) return;
    proc.kill('SIGKILL');
    if (!(await waitExit(proc, 5000))) throw new Error(`nbackup-server (pid ${proc.pid}) survived SIGKILL`);
  };

  const listening = new Promise<number>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const fail = (why: string) =>
      settle(() => reject(new Error(`nbackup-server --config ${configPath} ${why}\n--- output ---\n${out.join('\n')}`)));
    const timer = setTimeout(() => fail(`did not log "listening" within ${timeoutMs} ms`), timeoutMs);
    const onLine = (prefix: string) => (line: string) => {
      out.push(prefix + line);
      if (out.length > KEEP_LINES) out.shift();
      const l = parseLogLine(line);
      if (l && l.msg === 'listening' && typeof l.port === 'number') {
        const port = l.port;
        settle(() => resolve(port));
      }
    };
    createInterface({ input: proc.stdout }).on('line', onLine('out| '));
    createInterface({ input: proc.stderr }).on('line', onLine('err| '));
    proc.once('error', (err) => {
      spawnError = err;
      fail(`could not be started: ${err.message}`);
    });
    // 'close' comes after the output streams have ended, so every line has been seen.
    proc.once('close', (code, signal) => fail(`exited (code ${code}, signal ${signal}) before listening`));
  });

  try {
    const port = await listening;
    return { proc, port, output: () => out, stop, killSync };
  } catch (err) {
    await stop(1000).catch(() => undefined);
    throw err;
  }
}

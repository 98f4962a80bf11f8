import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { formatDuration } from '../config/index.js';
import { NbackupError } from '../errors.js';
import type { Logger } from '../log/logger.js';

/**
 * An entry's `before` and `after` commands, run by /bin/sh in their own process group with a time
 * limit (the whole group is killed when it runs out, or when the run is aborted). Every line they
 * print goes to the log, up to MAX_LOGGED_LINES; the last lines of stderr are kept for the error.
 */
export type HookName = 'before' | 'after';

export interface HookResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stderrTail: string;
}

const MAX_LOGGED_LINES = 2000;
const TAIL_LINES = 10;
const TAIL_BYTES = 2048;

export function runHook(name: HookName, command: string, o: { timeoutMs: number; log: Logger; env?: Record<string, string>; signal?: AbortSignal }): Promise<HookResult> {
  const log = o.log.child({ hook: name });
  log.info({ command }, `${name} hook started`);
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...o.env } });
    let logged = 0;
    const tail: string[] = [];
    const onLine = (stream: 'stdout' | 'stderr') => (line: string) => {
      if (stream === 'stderr') {
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
      }
      if (++logged <= MAX_LOGGED_LINES) (stream === 'stderr' ? log.warn({ stream }, line) : log.info({ stream }, line));
      else if (logged === MAX_LOGGED_LINES + 1) log.warn(`${name} hook: more than ${MAX_LOGGED_LINES} lines of output; the rest is not logged`);
    };
    createInterface({ input: child.stdout! }).on('line', onLine('stdout'));
    createInterface({ input: child.stderr! }).on('line', onLine('stderr'));
    let timedOut = false;
    const killGroup = (): void => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, o.timeoutMs);
    o.signal?.addEventListener('abort', killGroup, { once: true });
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', killGroup);
      let stderrTail = tail.join('\n');
      if (stderrTail.length > TAIL_BYTES) stderrTail = stderrTail.slice(-TAIL_BYTES);
      const result = { code, signal, timedOut, stderrTail };
      (code === 0 ? log.info.bind(log) : log.warn.bind(log))({ exitCode: code, signal, timedOut }, `${name} hook finished`);
      resolve(result);
    };
    // 'close' follows 'error' too (a shell that cannot start): the message joins the tail.
    child.once('error', (err) => tail.push(`cannot run /bin/sh: ${err.message}`));
    child.once('close', done);
  });
}

/** What went wrong with a hook, as one line: exit status (or time-out) and its stderr tail. */
export function hookFailure(name: HookName, r: HookResult, timeoutMs: number): NbackupError | null {
  if (r.code === 0 && !r.timedOut) return null;
  const how = r.timedOut ? `did not finish within ${formatDuration(timeoutMs)}` : r.signal ? `was killed by ${r.signal}` : `exited with status ${r.code}`;
  const tail = r.stderrTail ? `: ${r.stderrTail.replace(/\n/g, ' | ')}` : '';
  return new NbackupError('hook', `${name} hook ${how}${tail}`);
}

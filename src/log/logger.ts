import fs from 'node:fs';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { LoggingConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';
import { printableText } from '../printable.js';

export type { Logger };

/** Renders pino's JSON lines as "time LEVEL msg key=value …" for people reading a terminal. */
function textStream(out: NodeJS.WritableStream): Writable {
  const names: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        try {
          const { time, level, msg, pid: _pid, hostname: _h, ...rest } = JSON.parse(line) as Record<string, unknown>;
          const kv = Object.entries(rest)
            .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
            .join(' ');
          // A value without spaces is printed unquoted: a name in it must not act on the terminal.
          out.write(`${printableText(`${new Date(Number(time)).toISOString()} ${names[Number(level)] ?? level} ${String(msg ?? '')}${kv ? ' ' + kv : ''}`)}\n`);
        } catch {
          out.write(line + '\n');
        }
      }
      done();
    },
  });
}

/**
 * `logging.file`, opened for appending now, so that a folder that does not exist or a file that
 * cannot be written is a configuration error at start-up rather than a crash at the first line.
 */
function openLogFile(file: string, configFile: string): fs.WriteStream {
  let fd: number;
  try {
    fd = fs.openSync(file, 'a', 0o640);
  } catch (err) {
    throw new NbackupError('config', `${configFile}: logging.file: cannot open ${file} for appending: ${errorMessage(err)}`, { cause: err });
  }
  const stream = fs.createWriteStream('', { fd });
  let reported = false;
  stream.on('error', (err) => {
    // A log that cannot be written (disk full) must not take the process down with it.
    if (!reported) process.stderr.write(`cannot write to log file ${file}: ${err.message}\n`);
    reported = true;
  });
  return stream;
}

/**
 * Where a logger's lines go, switchable while the process runs: a reload (SIGHUP) may change the
 * format or the file, and reopening the same file is how logrotate's rename is followed.
 */
class LogDestination {
  private target: NodeJS.WritableStream;
  private file: fs.WriteStream | null;

  constructor(cfg: LoggingConfig, configFile: string) {
    ({ target: this.target, file: this.file } = LogDestination.open(cfg, configFile));
  }

  private static open(cfg: LoggingConfig, configFile: string): { target: NodeJS.WritableStream; file: fs.WriteStream | null } {
    const file = cfg.file ? openLogFile(cfg.file, configFile) : null;
    const dest = file ?? process.stdout;
    return { target: cfg.format === 'text' ? textStream(dest) : dest, file };
  }

  /** Wraps every write, e.g. to clear a progress bar on the same terminal first (null: none). */
  intercept: ((write: () => void) => void) | null = null;

  write(chunk: string): boolean {
    if (!this.intercept) return this.target.write(chunk);
    let ok = true;
    this.intercept(() => (ok = this.target.write(chunk)));
    return ok;
  }

  /** Opens the new destination first (a bad one throws and changes nothing), then closes the old file. */
  switchTo(cfg: LoggingConfig, configFile: string): void {
    const next = LogDestination.open(cfg, configFile);
    const old = this.file;
    ({ target: this.target, file: this.file } = next);
    old?.end();
  }
}

const destinations = new WeakMap<Logger, LogDestination>();

/** A pino logger for `cfg`; `configFile` names where `cfg` came from in an error. */
export function createLogger(cfg: LoggingConfig, name: string, configFile = 'configuration'): Logger {
  const dest = new LogDestination(cfg, configFile);
  const log = pino({ name, level: cfg.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, dest);
  destinations.set(log, dest);
  return log;
}

/**
 * Applies a reloaded `logging` section to a running logger (and every child made from it): level,
 * format and file; the file is opened anew even when its name is the same (log rotation).
 */
export function reconfigureLogger(log: Logger, cfg: LoggingConfig, configFile: string): void {
  const dest = destinations.get(log);
  if (!dest) throw new NbackupError('internal', 'logger was not made by createLogger');
  dest.switchTo(cfg, configFile);
  log.level = cfg.level;
}

/** Resolves once everything logged so far is handed to the destination. */
export function flushLogs(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}

/** Routes the logger's writes through `around` (a progress bar's clear-write-redraw), or stops. */
export function setLogInterceptor(log: Logger, around: ((write: () => void) => void) | null): void {
  const dest = destinations.get(log);
  if (dest) dest.intercept = around;
}

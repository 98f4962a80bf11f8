import fs from 'node:fs';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { LoggingConfig } from '../config/index.js';
import { NbackupError, errorMessage } from '../errors.js';

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
          out.write(`${new Date(Number(time)).toISOString()} ${names[Number(level)] ?? level} ${String(msg ?? '')}${kv ? ' ' + kv : ''}\n`);
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

/** A pino logger for `cfg`; `configFile` names where `cfg` came from in an error. */
export function createLogger(cfg: LoggingConfig, name: string, configFile = 'configuration'): Logger {
  const dest = cfg.file ? openLogFile(cfg.file, configFile) : process.stdout;
  const stream = cfg.format === 'text' ? textStream(dest) : dest;
  return pino({ name, level: cfg.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, stream);
}

/** Resolves once everything logged so far is handed to the destination. */
export function flushLogs(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}

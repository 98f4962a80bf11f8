import fs from 'node:fs';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggingConfig {
  level: string;
  format: 'json' | 'text';
  file: string;
}

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

export function createLogger(cfg: LoggingConfig, name: string): Logger {
  const dest = cfg.file ? fs.createWriteStream(cfg.file, { flags: 'a' }) : process.stdout;
  const stream = cfg.format === 'text' ? textStream(dest) : dest;
  return pino({ name, level: cfg.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, stream);
}

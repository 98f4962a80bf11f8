/**
 * The shape of agent.yaml and server.yaml. Every object is strict (an unknown key is an error, so a
 * typo never silently falls back to a default), and the OUTPUT of these schemas is what the program
 * uses: sizes are numbers of bytes, durations numbers of milliseconds, paths absolute, defaults
 * filled in, per-backup overrides merged with the global values.
 *
 * Every leaf writes its own message ("expected a size between 64kb and 16mb, got \"32kb\"");
 * load.ts prefixes the file name and the key path.
 */
import path from 'node:path';
import { z } from 'zod';
import { CronExpressionParser } from 'cron-parser';
import { nameProblem } from '../../protocol/names.js';
import { formatBytes, formatDuration, parseDuration, parseSize, GB, KB, MB } from './units.js';

// ---------------------------------------------------------------------------------------------
// Messages

/** How a value found in a config file is named in a message. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return v.length === 0 ? 'an empty list' : 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

function missing(expected: string): string {
  return `missing required key (expected ${expected})`;
}

function wrong(expected: string, v: unknown, hint = ''): string {
  return `expected ${expected}, got ${describeValue(v)}${hint}`;
}

/** Returned by a leaf check to refuse a value with a message. */
class Invalid {
  constructor(readonly message: string) {}
}

/**
 * A leaf: any YAML value in, T out. A missing key is reported as missing (unless the leaf is
 * wrapped in .default()/.optional(), which never call it with undefined).
 */
function leaf<T>(expected: string, check: (v: unknown) => T | Invalid) {
  return z.unknown().transform((v, ctx): T => {
    if (v === undefined) {
      ctx.addIssue({ code: 'custom', message: missing(expected), input: v });
      return z.NEVER;
    }
    const out = check(v);
    if (out instanceof Invalid) {
      ctx.addIssue({ code: 'custom', message: out.message, input: v });
      return z.NEVER;
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Leaves

function str(expected = 'a string') {
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v, typeof v === 'number' ? ' (quote it)' : ''));
    return v;
  });
}

function nonEmptyStr(expected: string) {
  return leaf(expected, (v) => {
    if (typeof v !== 'string' || v.trim() === '') return new Invalid(wrong(expected, v));
    return v;
  });
}

/** Agent, backup and storage names: they become folder names on the server. */
function nameLeaf(what: string) {
  const expected = `a ${what} (a string usable as a folder name)`;
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v, typeof v === 'number' ? ' (quote it)' : ''));
    const problem = nameProblem(v);
    if (problem !== null) return new Invalid(`invalid ${what} ${JSON.stringify(v)}: it ${problem}`);
    return v;
  });
}

function bool() {
  return leaf('true or false', (v) => (typeof v === 'boolean' ? v : new Invalid(wrong('true or false', v))));
}

function int(min: number, max?: number) {
  const expected = max === undefined ? `an integer ≥ ${min}` : `an integer between ${min} and ${max}`;
  return leaf(expected, (v) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || (max !== undefined && v > max)) {
      return new Invalid(wrong(expected, v));
    }
    return v;
  });
}

function oneOf<const T extends readonly string[]>(values: T) {
  const expected = `one of ${values.join(', ')}`;
  return leaf(expected, (v): T[number] | Invalid =>
    typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as T[number]) : new Invalid(wrong(expected, v)),
  );
}

/** A size: bytes as a whole number or a string like 256mb. Output: bytes. */
function size(min: number, max?: number) {
  const expected =
    max !== undefined
      ? `a size between ${formatBytes(min)} and ${formatBytes(max)}`
      : min > 0
        ? `a size of at least ${formatBytes(min)}`
        : 'a size';
  return leaf(expected, (v) => {
    if (typeof v !== 'string' && typeof v !== 'number') return new Invalid(wrong(expected, v));
    let bytes: number;
    try {
      bytes = parseSize(v);
    } catch {
      return new Invalid(wrong(`${expected} (like 64kb, 256mb, 1gb)`, v));
    }
    if (bytes < min || (max !== undefined && bytes > max)) return new Invalid(wrong(expected, v));
    return bytes;
  });
}

/** A duration: a string like 30s, 5m, 1h30m. Output: milliseconds. */
function duration(min: number) {
  const expected =
    min > 0 ? `a duration of at least ${formatDuration(min)} (like 500ms, 30s, 5m, 1h30m)` : 'a duration (like 500ms, 30s, 5m, 1h30m)';
  return leaf(expected, (v) => {
    if (typeof v === 'number') return new Invalid(wrong(expected, v, ' (a bare number is ambiguous: add a unit)'));
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch {
      const bare = /^\s*\d+(\.\d+)?\s*$/.test(v) ? ' (a bare number is ambiguous: add a unit)' : '';
      return new Invalid(wrong(expected, v, bare));
    }
    if (ms < min) return new Invalid(wrong(expected, v));
    return ms;
  });
}

function resolvePath(baseDir: string | undefined, p: string): string {
  return baseDir === undefined ? path.resolve(p) : path.resolve(baseDir, p);
}

/** A file or folder path; relative paths are relative to the config file's folder. `~` is not expanded. */
function pathLeaf(baseDir: string | undefined, expected = 'a path') {
  return leaf(expected, (v) => {
    if (typeof v !== 'string' || v === '') return new Invalid(wrong(expected, v));
    if (v.includes('\0')) return new Invalid(`expected ${expected}, got a string containing NUL`);
    const resolved = resolvePath(baseDir, v);
    if (!path.isAbsolute(resolved)) return new Invalid(`expected ${expected} that resolves to an absolute path, got ${JSON.stringify(v)}`);
    return resolved;
  });
}

/** logging.file: "" means stdout/stderr, anything else is a path. */
function optionalPathLeaf(baseDir: string | undefined) {
  const expected = 'a path, or "" for standard output';
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    if (v === '') return '';
    if (v.includes('\0')) return new Invalid(`expected ${expected}, got a string containing NUL`);
    return resolvePath(baseDir, v);
  });
}

export interface HostPort {
  /** As written in the file, e.g. `backup.example.com:9847` or `[::1]:9847`. */
  address: string;
  /** Without brackets, ready for net.connect/listen: `backup.example.com`, `::1`. */
  host: string;
  port: number;
}

/** Parses `host:port` / `[v6]:port`. Returns null when the text is not of that form. */
export function parseHostPort(text: string, minPort = 1): HostPort | null {
  const m = /^(?:\[([^\]\s]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < minPort || port > 65535) return null;
  return { address: text, host: m[1] ?? m[2], port };
}

function hostPort(minPort: number) {
  const expected = `host:port with a port between ${minPort} and 65535 (like backup.example.com:9847 or [::1]:9847)`;
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    return parseHostPort(v, minPort) ?? new Invalid(wrong(expected, v));
  });
}

/** A cron expression: 5 fields, or 6 with seconds first. */
function cron() {
  const expected = 'a cron expression with 5 fields (minute hour day month weekday) or 6 with seconds first';
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    const fields = v.trim().split(/\s+/).filter((f) => f !== '');
    if (fields.length !== 5 && fields.length !== 6) {
      return new Invalid(wrong(expected, v, ` (${fields.length} field${fields.length === 1 ? '' : 's'})`));
    }
    try {
      CronExpressionParser.parse(fields.join(' '));
    } catch (err) {
      return new Invalid(wrong(expected, v, `: ${err instanceof Error ? err.message : String(err)}`));
    }
    return fields.join(' ');
  });
}

// ---------------------------------------------------------------------------------------------
// Containers

/** A strict mapping: unknown keys are errors. */
function obj<S extends z.core.$ZodLooseShape>(shape: S, expectedWhat?: string) {
  const allowed = Object.keys(shape).join(', ');
  const expected = expectedWhat ?? `a mapping with keys ${allowed}`;
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') return `unknown key (allowed here: ${allowed})`;
      if (iss.input === undefined) return missing(expected);
      return wrong(expected, iss.input);
    },
  });
}

/** An optional mapping whose keys all have defaults; absent or empty (`logging:`) means all defaults. */
function section<S extends z.core.$ZodLooseShape>(shape: S) {
  return z.preprocess((v) => (v === null ? undefined : v), obj(shape).prefault({} as z.input<ReturnType<typeof obj<S>>>));
}

function list<T extends z.ZodType>(item: T, expected: string, min = 0) {
  return z
    .array(item, { error: (iss) => (iss.input === undefined ? missing(expected) : wrong(expected, iss.input)) })
    .min(min, { error: (iss) => wrong(`${expected} with at least ${min} entr${min === 1 ? 'y' : 'ies'}`, iss.input) });
}

// ---------------------------------------------------------------------------------------------
// Pieces shared by both files

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export const LOG_FORMATS = ['json', 'text'] as const;

function loggingSection(baseDir: string | undefined) {
  return section({
    level: oneOf(LOG_LEVELS).default('info'),
    format: oneOf(LOG_FORMATS).default('json'),
    file: optionalPathLeaf(baseDir).default(''),
  });
}

export const RESUME_BUFFER_MIN = MB;
export const RESUME_BUFFER_MAX = GB;
export const CHUNK_SIZE_MIN = 64 * KB;
export const CHUNK_SIZE_MAX = 16 * MB;

const bufferSize = () => size(RESUME_BUFFER_MIN, RESUME_BUFFER_MAX);
const chunkSize = () => size(CHUNK_SIZE_MIN, CHUNK_SIZE_MAX);
const compressionLevel = () => int(1, 9);

// ---------------------------------------------------------------------------------------------
// agent.yaml

/**
 * The agent.yaml schema. Relative paths resolve against `baseDir` (the config file's folder), or
 * against the working directory at parse time when it is not given.
 */
export function agentConfigSchema(baseDir?: string) {
  const backupEntry = obj(
    {
      name: nameLeaf('backup name'),
      storage: nameLeaf('storage name'),
      schedule: cron(),
      parallels: int(0, 255).default(0),
      auto_scaler: section({ enabled: bool().default(true) }),
      sources: list(obj({ path: pathLeaf(baseDir) }, 'a mapping like { path: /app/scripts }'), 'a list of { path: ... } sources', 1),
      exclude: list(nonEmptyStr('a glob pattern'), 'a list of glob patterns').default([]),
      resume: obj({ buffer_size: bufferSize().optional(), chunk_size: chunkSize().optional() }).optional(),
      compression: obj({ level: compressionLevel().optional() }).optional(),
    },
    'a backup entry (a mapping with name, storage, schedule, sources)',
  );

  const backups = list(backupEntry, 'a list of backup entries', 1).transform((entries, ctx) => {
    const seen = new Map<string, number>();
    entries.forEach((b, i) => {
      const first = seen.get(b.name);
      if (first !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [i, 'name'],
          message: `duplicate backup name ${JSON.stringify(b.name)} (already used by backups[${first}])`,
          input: b.name,
        });
      } else {
        seen.set(b.name, i);
      }
    });
    return entries;
  });

  return obj({
    agent: obj({ name: nameLeaf('agent name') }),
    server: obj({ address: hostPort(1) }).transform((s): HostPort => s.address),
    tls: obj({
      ca_cert: pathLeaf(baseDir, 'a path to a PEM file'),
      client_cert: pathLeaf(baseDir, 'a path to a PEM file'),
      client_key: pathLeaf(baseDir, 'a path to a PEM file'),
    }),
    backups,
    retry: section({
      max_attempts: int(1).default(5),
      initial_delay: duration(0).default(1000),
      max_delay: duration(0).default(5 * 60_000),
      read_timeout: duration(1).default(60_000),
      connect_timeout: duration(1).default(30_000),
    }),
    resume: section({
      buffer_size: bufferSize().default(256 * MB),
      chunk_size: chunkSize().default(MB),
    }),
    compression: section({ level: compressionLevel().default(1) }),
    logging: loggingSection(baseDir),
    daemon: section({
      control_channel: section({
        enabled: bool().default(true),
        keepalive_interval: duration(1).default(30_000),
        reconnect_delay: duration(0).default(5000),
        max_reconnect_delay: duration(0).default(5 * 60_000),
      }),
    }),
  }).transform((c, ctx) => {
    if (c.retry.initial_delay > c.retry.max_delay) {
      ctx.addIssue({
        code: 'custom',
        path: ['retry', 'max_delay'],
        message: `must be at least retry.initial_delay (${formatDuration(c.retry.initial_delay)}), got ${formatDuration(c.retry.max_delay)}`,
        input: c.retry.max_delay,
      });
    }
    const cc = c.daemon.control_channel;
    if (cc.reconnect_delay > cc.max_reconnect_delay) {
      ctx.addIssue({
        code: 'custom',
        path: ['daemon', 'control_channel', 'max_reconnect_delay'],
        message: `must be at least daemon.control_channel.reconnect_delay (${formatDuration(cc.reconnect_delay)}), got ${formatDuration(cc.max_reconnect_delay)}`,
        input: cc.max_reconnect_delay,
      });
    }
    const bufferTooSmall = (where: (string | number)[], r: { buffer_size: number; chunk_size: number }) => {
      if (r.buffer_size < r.chunk_size) {
        ctx.addIssue({
          code: 'custom',
          path: [...where, 'buffer_size'],
          message: `must be at least chunk_size (${formatBytes(r.chunk_size)}), got ${formatBytes(r.buffer_size)}`,
          input: r.buffer_size,
        });
      }
    };
    bufferTooSmall(['resume'], c.resume);

    const merged = c.backups.map((b, i) => {
      const resume = {
        buffer_size: b.resume?.buffer_size ?? c.resume.buffer_size,
        chunk_size: b.resume?.chunk_size ?? c.resume.chunk_size,
      };
      if (b.resume !== undefined) bufferTooSmall(['backups', i, 'resume'], resume);
      return {
        name: b.name,
        storage: b.storage,
        schedule: b.schedule,
        parallels: b.parallels,
        auto_scaler: b.auto_scaler,
        sources: b.sources,
        exclude: b.exclude,
        resume,
        compression: { level: b.compression?.level ?? c.compression.level },
      };
    });
    return { ...c, backups: merged };
  });
}

export const AgentConfigSchema = agentConfigSchema();
export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type BackupConfig = AgentConfig['backups'][number];
export type RetryConfig = AgentConfig['retry'];
export type ResumeConfig = AgentConfig['resume'];
export type CompressionConfig = AgentConfig['compression'];
export type AgentTlsConfig = AgentConfig['tls'];
export type ControlChannelConfig = AgentConfig['daemon']['control_channel'];

// ---------------------------------------------------------------------------------------------
// server.yaml

/** The server.yaml schema; relative paths resolve against `baseDir` (see agentConfigSchema). */
export function serverConfigSchema(baseDir?: string) {
  const storage = obj(
    {
      base_dir: pathLeaf(baseDir, 'a folder path'),
      max_backups: int(1).default(5),
      min_free: size(0).default(GB),
      assembler_pending_mem_limit: size(1).default(8 * MB),
    },
    'a storage mapping like { base_dir: /var/backups/scripts }',
  );

  const storages = z
    .record(z.string(), storage, {
      error: (iss) => {
        const expected = 'a mapping of storage name → { base_dir, max_backups, ... }';
        return iss.input === undefined ? missing(expected) : wrong(expected, iss.input);
      },
    })
    .transform((map, ctx) => {
      const names = Object.keys(map);
      if (names.length === 0) {
        ctx.addIssue({ code: 'custom', message: 'expected at least one storage, got an empty mapping', input: map });
      }
      const dirs = new Map<string, string>();
      for (const name of names) {
        const problem = nameProblem(name);
        if (problem !== null) {
          ctx.addIssue({ code: 'custom', path: [name], message: `invalid storage name ${JSON.stringify(name)}: it ${problem}`, input: name });
        }
        const dir = map[name].base_dir;
        const other = dirs.get(dir);
        if (other !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: [name, 'base_dir'],
            message: `${JSON.stringify(dir)} is already the base_dir of storage ${JSON.stringify(other)}`,
            input: dir,
          });
        } else {
          dirs.set(dir, name);
        }
      }
      return map;
    });

  return obj({
    server: obj({
      listen: hostPort(0),
      handshake_timeout: duration(1).default(10_000),
      session_ttl: duration(1).default(60 * 60_000),
      idle_timeout: duration(1).default(60_000),
    }).transform((s) => ({
      listen: s.listen.address,
      host: s.listen.host,
      port: s.listen.port,
      handshake_timeout: s.handshake_timeout,
      session_ttl: s.session_ttl,
      idle_timeout: s.idle_timeout,
    })),
    tls: obj({
      ca_cert: pathLeaf(baseDir, 'a path to a PEM file'),
      server_cert: pathLeaf(baseDir, 'a path to a PEM file'),
      server_key: pathLeaf(baseDir, 'a path to a PEM file'),
    }),
    storages,
    logging: loggingSection(baseDir),
  });
}

export const ServerConfigSchema = serverConfigSchema();
export type ServerConfig = z.output<typeof ServerConfigSchema>;
export type StorageConfig = ServerConfig['storages'][string];
export type ServerTlsConfig = ServerConfig['tls'];
export type LoggingConfig = ServerConfig['logging'];

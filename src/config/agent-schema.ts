/**
 * The agent.yaml schema. Every object is strict (an unknown key is an error, so a typo never
 * silently falls back to a default), and its OUTPUT is what the agent runs on: sizes in bytes,
 * durations in milliseconds, paths absolute, defaults filled in, per-backup overrides merged with
 * the global values.
 */
import type { z } from 'zod';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../../protocol/constants.js';
import { bool, cron, duration, hostPort, int, list, loggingSection, nameLeaf, nonEmptyStr, obj, oneOf, pathLeaf, section, size, type HostPort } from './leaves.js';
import { formatBytes, formatDuration, GB, MB } from './units.js';
import { overlap } from './path-overlap.js';

export const RESUME_BUFFER_MIN = MB;
const RESUME_BUFFER_MAX = GB;

const bufferSize = () => size(RESUME_BUFFER_MIN, RESUME_BUFFER_MAX);
const chunkSize = () => size(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
/** Archive formats and their level scales (gzip 1 fastest … 9 smallest; zstd 1 … 19). */
export const ARCHIVE_FORMATS = ['gzip', 'zstd'] as const;
export type ArchiveFormat = (typeof ARCHIVE_FORMATS)[number];
export const COMPRESSION_LEVELS: Record<ArchiveFormat, { min: number; max: number; default: number }> = {
  gzip: { min: 1, max: 9, default: 2 },
  zstd: { min: 1, max: 19, default: 3 },
};
/** Checked against the format's own scale once the format is known (see compressionOf). */
const compressionLevel = () => int(0);
const archiveFormat = () => oneOf(ARCHIVE_FORMATS);


/** Sources of one entry that are the same folder or nested (paths as written; the backup checks real paths too). */
function sourceOverlaps(sources: readonly { path: string }[], entry: number, ctx: z.RefinementCtx): void {
  for (let j = 1; j < sources.length; j++) {
    for (let i = 0; i < j; i++) {
      const how = overlap(sources[j].path, sources[i].path);
      if (how === null) continue;
      const word = how === 'same' ? 'is the same path as' : how === 'inside' ? 'is inside' : 'holds';
      ctx.addIssue({
        code: 'custom',
        path: [entry, 'sources', j],
        message: `${JSON.stringify(sources[j].path)} ${word} backups[${entry}].sources[${i}] (${JSON.stringify(sources[i].path)}): the files they share would be stored twice; keep one of them`,
        input: sources[j].path,
      });
      break;
    }
  }
}

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
      compression: obj({ format: archiveFormat().optional(), level: compressionLevel().optional() }).optional(),
      /** Longest one attempt (session) of this entry may run before it is stopped. */
      run_limit: duration(1000).default(24 * 3600_000),
      /** Bytes per second on the wire, across all of the entry's streams. */
      bandwidth_limit: size(16 * 1024).optional(),
      /** Shell commands run before and after the backup (hooks.ts). */
      before: nonEmptyStr('a shell command').optional(),
      after: nonEmptyStr('a shell command').optional(),
      hook_timeout: duration(1000).default(10 * 60_000),
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
      sourceOverlaps(b.sources, i, ctx);
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
    compression: section({ format: archiveFormat().default('gzip'), level: compressionLevel().optional() }),
    logging: loggingSection(baseDir),
    daemon: section({
      /** On SIGTERM/SIGINT, how long a running backup may go on before it is aborted. */
      shutdown_grace: duration(0).default(5 * 60_000),
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
    /** A level must be on its format's scale; without one, the format's default. */
    const compressionOf = (where: (string | number)[], format: ArchiveFormat, level: number | undefined) => {
      const scale = COMPRESSION_LEVELS[format];
      if (level !== undefined && (level < scale.min || level > scale.max)) {
        ctx.addIssue({ code: 'custom', path: [...where, 'level'], message: `expected a ${format} level between ${scale.min} and ${scale.max}, got ${level}`, input: level });
      }
      return { format, level: level ?? scale.default };
    };
    const compression = compressionOf(['compression'], c.compression.format, c.compression.level);

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
        run_limit: b.run_limit,
        bandwidth_limit: b.bandwidth_limit,
        before: b.before,
        after: b.after,
        hook_timeout: b.hook_timeout,
        // An entry's own format without its own level takes that format's default level.
        compression: b.compression
          ? compressionOf(
              ['backups', i, 'compression'],
              b.compression.format ?? compression.format,
              b.compression.level ?? (b.compression.format && b.compression.format !== compression.format ? undefined : compression.level),
            )
          : compression,
      };
    });
    return { ...c, compression, backups: merged };
  });
}

export const AgentConfigSchema = agentConfigSchema();
export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type BackupConfig = AgentConfig['backups'][number];
export type RetryConfig = AgentConfig['retry'];

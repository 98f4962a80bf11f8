/** The server.yaml schema; same rules as agent-schema.ts. */
import { z } from 'zod';
import { nameProblem } from '../../protocol/names.js';
import { bool, cron, duration, hostPort, int, loggingSection, missing, obj, pathLeaf, section, size, wrong } from './leaves.js';
import { MB } from './units.js';
import { keepsSomething, type KeepPolicy } from '../server/retention.js';

/** The server.yaml schema; relative paths resolve against `baseDir` (see agentConfigSchema). */
export function serverConfigSchema(baseDir?: string) {
  const count = int(0).default(0);
  const keep = obj({ last: count, hourly: count, daily: count, weekly: count, monthly: count, yearly: count });
  const storage = obj(
    {
      base_dir: pathLeaf(baseDir, 'a folder path'),
      /** Kept for older configs: the same as `keep: { last: N }`. */
      max_backups: int(1).optional(),
      keep: keep.optional(),
      min_free: size(0).default(64 * MB),
      assembler_pending_mem_limit: size(1).default(8 * MB),
    },
    'a storage mapping like { base_dir: /var/backups/scripts }',
  ).transform(({ max_backups, keep: policy, ...rest }, ctx) => {
    if (policy && max_backups !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['max_backups'], message: 'max_backups and keep exclude each other: write keep.last instead', input: max_backups });
    }
    const resolved: KeepPolicy = policy ?? { last: max_backups ?? 5, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 };
    if (!keepsSomething(resolved)) {
      ctx.addIssue({ code: 'custom', path: ['keep'], message: 'keeps nothing: set at least one of last, hourly, daily, weekly, monthly, yearly above 0', input: policy });
    }
    return { ...rest, keep: resolved };
  });

  const storages = z
    .record(z.string(), storage, {
      error: (iss) => {
        const expected = 'a mapping of storage name → { base_dir, keep, ... }';
        return iss.input === undefined ? missing(expected) : wrong(expected, iss.input);
      },
    })
    .transform((map, ctx) => {
      const names = Object.keys(map);
      if (names.length === 0) {
        ctx.addIssue({ code: 'custom', message: 'expected at least one storage, got an empty mapping', input: map });
      }
      if (names.length > 255) {
        ctx.addIssue({ code: 'custom', message: `expected at most 255 storages, got ${names.length}`, input: map });
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
      max_concurrent_sessions: int(0).default(0),
      /** Connections held at once: all, TLS handshakes from one address, and one agent's. */
      max_connections: int(1).default(4096),
      max_handshakes_per_address: int(1).default(64),
      max_connections_per_agent: int(1).default(512),
      flow_rotation: section({
        enabled: bool().default(false),
        /** A parallel stream slower than this (bytes/s) over a whole window is rotated. */
        min_throughput: size(1).default(MB),
        window: duration(100).default(60_000),
      }),
      /** The optional HTTP listener for Prometheus (/metrics) and /healthz. */
      metrics: section({
        enabled: bool().default(false),
        listen: hostPort(0).prefault('127.0.0.1:9848'),
      }),
      /** Re-reads every archive on this cron schedule (nbackup-server verify), results in the log and /metrics. */
      verify: section({
        schedule: cron().optional(),
      }),
    }).transform((s) => ({
      listen: s.listen.address,
      host: s.listen.host,
      port: s.listen.port,
      handshake_timeout: s.handshake_timeout,
      session_ttl: s.session_ttl,
      idle_timeout: s.idle_timeout,
      max_concurrent_sessions: s.max_concurrent_sessions,
      max_connections: s.max_connections,
      max_handshakes_per_address: s.max_handshakes_per_address,
      max_connections_per_agent: s.max_connections_per_agent,
      flow_rotation: s.flow_rotation,
      metrics: s.metrics,
      verify: s.verify,
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
export type LoggingConfig = ServerConfig['logging'];

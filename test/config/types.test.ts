/**
 * Compile-time guard: the OUTPUT types of the schemas are what the rest of the program codes
 * against. If a field changes name, type or optionality, this file stops compiling.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadAgentConfig, loadServerConfig, type AgentConfig, type ServerConfig } from '../../src/config/index.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
interface ExpectedLogging {
  level: LogLevel;
  format: 'json' | 'text';
  file: string;
}

interface ExpectedAgent {
  agent: { name: string };
  server: { address: string; host: string; port: number };
  tls: { ca_cert: string; client_cert: string; client_key: string };
  backups: {
    name: string;
    storage: string;
    schedule: string;
    parallels: number;
    auto_scaler: { enabled: boolean };
    sources: { path: string }[];
    exclude: string[];
    resume: { buffer_size: number; chunk_size: number };
    run_limit: number;
    bandwidth_limit: number | undefined;
    before: string | undefined;
    after: string | undefined;
    hook_timeout: number;
    compression: { format: 'gzip' | 'zstd'; level: number };
  }[];
  retry: { max_attempts: number; initial_delay: number; max_delay: number; read_timeout: number; connect_timeout: number };
  resume: { buffer_size: number; chunk_size: number };
  compression: { format: 'gzip' | 'zstd'; level: number };
  logging: ExpectedLogging;
  daemon: {
    shutdown_grace: number;
    control_channel: { enabled: boolean; keepalive_interval: number; reconnect_delay: number; max_reconnect_delay: number };
  };
}

interface ExpectedServer {
  server: { listen: string; host: string; port: number; handshake_timeout: number; session_ttl: number; idle_timeout: number; max_concurrent_sessions: number; max_connections: number; max_handshakes_per_address: number; max_connections_per_agent: number; flow_rotation: { enabled: boolean; min_throughput: number; window: number }; metrics: { enabled: boolean; listen: { address: string; host: string; port: number } }; verify: { schedule?: string | undefined } };
  tls: { ca_cert: string; server_cert: string; server_key: string };
  storages: Record<string, { base_dir: string; keep: { last: number; hourly: number; daily: number; weekly: number; monthly: number; yearly: number }; min_free: number; assembler_pending_mem_limit: number }>;
  logging: ExpectedLogging;
}

type Flat<T> = T extends (infer U)[] ? Flat<U>[] : T extends object ? { [K in keyof T]: Flat<T[K]> } : T;

test('output types have the documented shape', () => {
  // Compile-time: this file does not build if the schemas' output types drift from the shapes above.
  assertType<Equal<Flat<AgentConfig>, Flat<ExpectedAgent>>>();
  assertType<Equal<Flat<ServerConfig>, Flat<ExpectedServer>>>();
});

/** The key tree of a value: objects by their sorted keys, arrays by their first element. */
function keyTree(v: unknown): unknown {
  if (Array.isArray(v)) return v.length > 0 ? [keyTree(v[0])] : [];
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, keyTree((v as Record<string, unknown>)[k])]));
  }
  return typeof v;
}

const CONFIGS = fileURLToPath(new URL('../../../configs/', import.meta.url));

test('at run time the parsed example configs carry exactly the keys and value types of those shapes', async () => {
  const logging: ExpectedLogging = { level: 'info', format: 'json', file: '' };
  const retry = { max_attempts: 1, initial_delay: 1, max_delay: 1, read_timeout: 1, connect_timeout: 1 };
  const agentShape: ExpectedAgent = {
    agent: { name: '' },
    server: { address: '', host: '', port: 1 },
    tls: { ca_cert: '', client_cert: '', client_key: '' },
    backups: [
      {
        name: '',
        storage: '',
        schedule: '',
        parallels: 0,
        auto_scaler: { enabled: true },
        sources: [{ path: '' }],
        exclude: [''],
        resume: { buffer_size: 1, chunk_size: 1 },
        run_limit: 1,
        bandwidth_limit: 1,
        before: '',
        after: '',
        hook_timeout: 1,
        compression: { format: 'gzip', level: 1 },
      },
    ],
    retry,
    resume: { buffer_size: 1, chunk_size: 1 },
    compression: { format: 'gzip', level: 1 },
    logging,
    daemon: { shutdown_grace: 1, control_channel: { enabled: true, keepalive_interval: 1, reconnect_delay: 1, max_reconnect_delay: 1 } },
  };
  const serverShape: ExpectedServer = {
    server: { listen: '', host: '', port: 1, handshake_timeout: 1, session_ttl: 1, idle_timeout: 1, max_concurrent_sessions: 0, max_connections: 1, max_handshakes_per_address: 1, max_connections_per_agent: 1, flow_rotation: { enabled: false, min_throughput: 1, window: 1 }, metrics: { enabled: false, listen: { address: '', host: '', port: 1 } }, verify: { schedule: '' } },
    tls: { ca_cert: '', server_cert: '', server_key: '' },
    storages: { scripts: { base_dir: '', keep: { last: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 }, min_free: 1, assembler_pending_mem_limit: 1 } },
    logging,
  };
  const agent = await loadAgentConfig(`${CONFIGS}agent.example.yaml`);
  const server = await loadServerConfig(`${CONFIGS}server.example.yaml`);
  assert.deepEqual(keyTree(agent), keyTree(agentShape));
  assert.deepEqual(keyTree({ ...server, storages: { scripts: server.storages.scripts } }), keyTree(serverShape));
});

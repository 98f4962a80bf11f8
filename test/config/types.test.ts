/**
 * Compile-time guard: the OUTPUT types of the schemas are what the rest of the program codes
 * against. If a field changes name, type or optionality, this file stops compiling.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentConfig, ServerConfig } from '../../src/config/index.js';

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
    compression: { level: number };
  }[];
  retry: { max_attempts: number; initial_delay: number; max_delay: number; read_timeout: number; connect_timeout: number };
  resume: { buffer_size: number; chunk_size: number };
  compression: { level: number };
  logging: ExpectedLogging;
  daemon: {
    control_channel: { enabled: boolean; keepalive_interval: number; reconnect_delay: number; max_reconnect_delay: number };
  };
}

interface ExpectedServer {
  server: { listen: string; host: string; port: number; handshake_timeout: number; session_ttl: number; idle_timeout: number };
  tls: { ca_cert: string; server_cert: string; server_key: string };
  storages: Record<string, { base_dir: string; max_backups: number; min_free: number; assembler_pending_mem_limit: number }>;
  logging: ExpectedLogging;
}

type Flat<T> = T extends (infer U)[] ? Flat<U>[] : T extends object ? { [K in keyof T]: Flat<T[K]> } : T;

test('output types have the documented shape', () => {
  assertType<Equal<Flat<AgentConfig>, Flat<ExpectedAgent>>>();
  assertType<Equal<Flat<ServerConfig>, Flat<ExpectedServer>>>();
  assert.ok(true);
});

import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { ConfigError } from '../../src/config/index.js';

/** A minimal valid agent.yaml as a JS object; tests change a copy and stringify it. */
export function minimalAgent(): Record<string, unknown> {
  return {
    agent: { name: 'web-01' },
    server: { address: 'backup.example.com:9847' },
    tls: { ca_cert: '/etc/nbackup/ca.pem', client_cert: '/etc/nbackup/agent.pem', client_key: '/etc/nbackup/agent-key.pem' },
    backups: [
      { name: 'app', storage: 'scripts', schedule: '0 2 * * *', sources: [{ path: '/app/scripts' }] },
      { name: 'home', storage: 'home-dirs', schedule: '0 3 * * *', sources: [{ path: '/home' }] },
    ],
  };
}

export function minimalServer(): Record<string, unknown> {
  return {
    server: { listen: '127.0.0.1:0' },
    tls: { ca_cert: '/etc/nbackup/ca.pem', server_cert: '/etc/nbackup/server.pem', server_key: '/etc/nbackup/server-key.pem' },
    storages: { scripts: { base_dir: '/var/backups/scripts' } },
  };
}

export function yaml(value: unknown): string {
  return stringify(value);
}

/**
 * Runs `fn`, expects a ConfigError whose first problem is at `keyPath`, whose message names the
 * file and the key path, and matches `pattern` when given. Returns the error.
 */
export function expectConfigError(fn: () => unknown, file: string, keyPath: string, pattern?: RegExp): ConfigError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  const err = caught;
  assert.equal(err.kind, 'config');
  assert.equal(err.file, file);
  assert.equal(err.keyPath, keyPath, `key path; message was:\n${err.message}`);
  const firstLine = err.message.split('\n')[0];
  const prefix = keyPath === '' ? `${file}: ` : `${file}: ${keyPath}: `;
  assert.ok(firstLine.startsWith(prefix), `message should start with ${JSON.stringify(prefix)}, got:\n${err.message}`);
  if (pattern) assert.match(firstLine, pattern);
  return err;
}

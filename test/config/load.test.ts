import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AgentConfigSchema,
  loadAgentConfig,
  loadServerConfig,
  parseAgentConfig,
  parseServerConfig,
  ServerConfigSchema,
} from '../../src/config/index.js';
import { minimalAgent, minimalServer, yaml } from './helpers.js';

const KB = 1024;
const MB = 1024 * KB;
const GB = 1024 * MB;
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

test('the example configs load', async () => {
  const agent = await loadAgentConfig(path.join(repoRoot, 'configs/agent.example.yaml'));
  assert.equal(agent.agent.name, 'web-server-01');
  assert.deepEqual(agent.server, { address: '127.0.0.1:9847', host: '127.0.0.1', port: 9847 });
  assert.equal(agent.tls.client_key, '/etc/nbackup/pki/web-server-01.key');
  assert.equal(agent.backups.length, 2);
  assert.equal(agent.backups[0].schedule, '0 2 * * *');
  assert.deepEqual(agent.backups[0].exclude, ['*.log', '.git/**', 'node_modules/**']);

  const server = await loadServerConfig(path.join(repoRoot, 'configs/server.example.yaml'));
  assert.equal(server.server.port, 9847);
  assert.equal(server.server.host, '0.0.0.0');
  assert.deepEqual(Object.keys(server.storages), ['scripts', 'home-dirs']);
  assert.equal(server.storages['home-dirs'].keep.last, 10);
  assert.deepEqual(server.storages.scripts.keep, { last: 3, hourly: 0, daily: 7, weekly: 4, monthly: 6, yearly: 0 });
});

test('agent defaults are applied', () => {
  const c = parseAgentConfig(yaml(minimalAgent()), '/etc/nbackup/agent.yaml');
  const b = c.backups[0];
  assert.equal(b.parallels, 0);
  assert.deepEqual(b.auto_scaler, { enabled: true });
  assert.deepEqual(b.exclude, []);
  assert.deepEqual(b.resume, { buffer_size: 256 * MB, chunk_size: MB });
  assert.deepEqual(b.compression, { format: 'gzip', level: 2 });
  assert.deepEqual(c.retry, {
    max_attempts: 5,
    initial_delay: 1000,
    max_delay: 300_000,
    read_timeout: 60_000,
    connect_timeout: 30_000,
  });
  assert.deepEqual(c.resume, { buffer_size: 256 * MB, chunk_size: MB });
  assert.deepEqual(c.compression, { format: 'gzip', level: 2 });
  assert.deepEqual(c.logging, { level: 'info', format: 'json', file: '' });
  assert.deepEqual(c.daemon, {
    shutdown_grace: 300_000,
    control_channel: { enabled: true, keepalive_interval: 30_000, reconnect_delay: 5000, max_reconnect_delay: 300_000 },
  });
});

test('empty optional sections mean all defaults; partial sections keep the other defaults', () => {
  const text = yaml(minimalAgent()) + 'logging:\nretry:\n  max_attempts: 2\ndaemon:\n  control_channel:\n    enabled: false\n';
  const c = parseAgentConfig(text, '/etc/nbackup/agent.yaml');
  assert.deepEqual(c.logging, { level: 'info', format: 'json', file: '' });
  assert.equal(c.retry.max_attempts, 2);
  assert.equal(c.retry.max_delay, 300_000);
  assert.equal(c.daemon.control_channel.enabled, false);
  assert.equal(c.daemon.control_channel.keepalive_interval, 30_000);
});

test('sizes and durations in the file become bytes and milliseconds', () => {
  const a = minimalAgent();
  a.retry = { initial_delay: '250ms', max_delay: '1h30m', read_timeout: '2m', connect_timeout: '1.5s' };
  a.resume = { buffer_size: '1gb', chunk_size: 65536 };
  const c = parseAgentConfig(yaml(a), '/etc/nbackup/agent.yaml');
  assert.equal(c.retry.initial_delay, 250);
  assert.equal(c.retry.max_delay, 5_400_000);
  assert.equal(c.retry.read_timeout, 120_000);
  assert.equal(c.retry.connect_timeout, 1500);
  assert.deepEqual(c.resume, { buffer_size: GB, chunk_size: 64 * KB });
});

test('per-backup resume and compression overrides merge with the global values', () => {
  const a = minimalAgent();
  a.resume = { buffer_size: '512mb', chunk_size: '2mb' };
  a.compression = { level: 3 };
  const backups = a.backups as Record<string, unknown>[];
  backups[0].resume = { chunk_size: '4mb' };
  backups[0].compression = { level: 9 };
  backups[1].resume = { buffer_size: '64mb' };
  const c = parseAgentConfig(yaml(a), '/etc/nbackup/agent.yaml');
  assert.deepEqual(c.backups[0].resume, { buffer_size: 512 * MB, chunk_size: 4 * MB });
  assert.deepEqual(c.backups[0].compression, { format: 'gzip', level: 9 });
  assert.deepEqual(c.backups[1].resume, { buffer_size: 64 * MB, chunk_size: 2 * MB });
  assert.deepEqual(c.backups[1].compression, { format: 'gzip', level: 3 });
  assert.deepEqual(c.resume, { buffer_size: 512 * MB, chunk_size: 2 * MB });
  assert.deepEqual(c.compression, { format: 'gzip', level: 3 });
});

test('compression format: per entry or global, each with its own level scale and default level', () => {
  const a = minimalAgent();
  a.compression = { format: 'zstd' };
  const backups = a.backups as Record<string, unknown>[];
  backups[0].compression = { format: 'gzip' };
  backups[1].compression = { level: 12 };
  const c = parseAgentConfig(yaml(a), '/etc/nbackup/agent.yaml');
  assert.deepEqual(c.compression, { format: 'zstd', level: 3 }, 'the global format with its default level');
  assert.deepEqual(c.backups[0].compression, { format: 'gzip', level: 2 }, 'an entry of another format takes that format default');
  assert.deepEqual(c.backups[1].compression, { format: 'zstd', level: 12 }, 'an entry level on the global format scale');
  const bad = minimalAgent();
  (bad.backups as Record<string, unknown>[])[0].compression = { format: 'gzip', level: 12 };
  assert.throws(() => parseAgentConfig(yaml(bad), '/etc/nbackup/agent.yaml'), /backups\[0\]\.compression\.level: expected a gzip level between 1 and 9, got 12/);
  const unknown = minimalAgent();
  unknown.compression = { format: 'xz' };
  assert.throws(() => parseAgentConfig(yaml(unknown), '/etc/nbackup/agent.yaml'), /compression\.format: expected one of gzip, zstd, got "xz"/);
});

test('relative paths resolve against the config file folder; absolute ones and ~ are kept as written', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'nbackup-config-'));
  try {
    await mkdir(path.join(dir, 'conf'));
    const a = minimalAgent();
    a.tls = { ca_cert: 'certs/ca.pem', client_cert: './agent.pem', client_key: '../keys/agent-key.pem' };
    (a.backups as Record<string, unknown>[])[0].sources = [{ path: 'data' }, { path: '/abs/path' }, { path: '~/x' }];
    a.logging = { file: 'logs/agent.log' };
    const agentFile = path.join(dir, 'conf', 'agent.yaml');
    await writeFile(agentFile, yaml(a));
    const c = await loadAgentConfig(agentFile);
    const conf = path.join(dir, 'conf');
    assert.equal(c.tls.ca_cert, path.join(conf, 'certs/ca.pem'));
    assert.equal(c.tls.client_cert, path.join(conf, 'agent.pem'));
    assert.equal(c.tls.client_key, path.join(dir, 'keys/agent-key.pem'));
    assert.deepEqual(
      c.backups[0].sources.map((s) => s.path),
      [path.join(conf, 'data'), '/abs/path', path.join(conf, '~/x')],
    );
    assert.equal(c.logging.file, path.join(conf, 'logs/agent.log'));

    const s = minimalServer();
    s.tls = { ca_cert: 'ca.pem', server_cert: 'server.pem', server_key: 'server-key.pem' };
    s.storages = { scripts: { base_dir: 'backups/scripts' } };
    const serverFile = path.join(dir, 'server.yaml');
    await writeFile(serverFile, yaml(s));
    const sc = await loadServerConfig(serverFile);
    assert.equal(sc.tls.server_key, path.join(dir, 'server-key.pem'));
    assert.equal(sc.storages.scripts.base_dir, path.join(dir, 'backups/scripts'));
    assert.equal(sc.logging.file, '');

    // A relative config file name resolves its folder from the working directory.
    const rel = path.relative(process.cwd(), serverFile);
    assert.equal((await loadServerConfig(rel)).storages.scripts.base_dir, path.join(dir, 'backups/scripts'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('server defaults and host:port forms', () => {
  const c = parseServerConfig(yaml(minimalServer()), '/etc/nbackup/server.yaml');
  assert.deepEqual(c.server, {
    listen: '127.0.0.1:0',
    host: '127.0.0.1',
    port: 0,
    handshake_timeout: 10_000,
    session_ttl: 3_600_000,
    idle_timeout: 60_000,
    max_concurrent_sessions: 0,
    max_connections: 4096,
    max_handshakes_per_address: 64,
    max_connections_per_agent: 512,
    flow_rotation: { enabled: false, min_throughput: MB, window: 60_000 },
    metrics: { enabled: false, listen: { address: '127.0.0.1:9848', host: '127.0.0.1', port: 9848 } },
    verify: {},
  });
  assert.deepEqual(c.storages.scripts, {
    base_dir: '/var/backups/scripts',
    keep: { last: 5, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 },
    min_free: 64 * MB,
    assembler_pending_mem_limit: 8 * MB,
  });
  assert.deepEqual(c.logging, { level: 'info', format: 'json', file: '' });

  const s = minimalServer();
  s.server = { listen: '[::1]:9847', handshake_timeout: '2s', session_ttl: '10m', idle_timeout: '500ms' };
  s.storages = { a: { base_dir: '/a', max_backups: 1, min_free: 0, assembler_pending_mem_limit: '64kb' } };
  s.logging = { level: 'debug', format: 'text', file: '/var/log/nbackup.log' };
  const c2 = parseServerConfig(yaml(s), '/etc/nbackup/server.yaml');
  assert.equal(c2.server.host, '::1');
  assert.equal(c2.server.port, 9847);
  assert.equal(c2.server.session_ttl, 600_000);
  assert.equal(c2.server.idle_timeout, 500);
  assert.deepEqual(c2.storages.a, { base_dir: '/a', keep: { last: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 }, min_free: 0, assembler_pending_mem_limit: 64 * KB });
  assert.deepEqual(c2.logging, { level: 'debug', format: 'text', file: '/var/log/nbackup.log' });

  const a = minimalAgent();
  a.server = { address: '[2001:db8::1]:443' };
  assert.deepEqual(parseAgentConfig(yaml(a), '/x/agent.yaml').server, { address: '[2001:db8::1]:443', host: '2001:db8::1', port: 443 });
});

test('cron schedules: 5 fields, or 6 with seconds first', () => {
  for (const schedule of ['0 2 * * *', '*/15 * * * *', '0 0 2 * * 1-5', '30 0 3 * * sun', '0 2 1,15 * *']) {
    const a = minimalAgent();
    (a.backups as Record<string, unknown>[])[0].schedule = schedule;
    assert.equal(parseAgentConfig(yaml(a), '/x/agent.yaml').backups[0].schedule, schedule);
  }
});

test('the exported schemas parse plain objects too', () => {
  const a = AgentConfigSchema.parse(minimalAgent());
  assert.equal(a.backups[1].name, 'home');
  const s = ServerConfigSchema.parse(minimalServer());
  assert.deepEqual(s.storages.scripts.keep, { last: 5, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 });
});

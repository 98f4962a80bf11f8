import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadAgentConfig, loadServerConfig, parseAgentConfig, parseServerConfig } from '../../src/config/index.js';
import { NbackupError } from '../../src/errors.js';
import { expectConfigError, minimalAgent, minimalServer, yaml } from './helpers.js';

const AGENT = 'conf/agent.yaml';
const SERVER = 'conf/server.yaml';

function agentWith(change: (a: Record<string, unknown>, backups: Record<string, unknown>[]) => void): string {
  const a = minimalAgent();
  change(a, a.backups as Record<string, unknown>[]);
  return yaml(a);
}

function serverWith(change: (s: Record<string, unknown>) => void): string {
  const s = minimalServer();
  change(s);
  return yaml(s);
}

test('ConfigError is an NbackupError of kind config', () => {
  const err = expectConfigError(() => parseAgentConfig('', AGENT), AGENT, '', /empty/);
  assert.ok(err instanceof NbackupError);
  assert.equal(err.name, 'ConfigError');
});

test('invalid YAML names the file, line and column', () => {
  const text = 'agent:\n  name: a\nserver: {address: [1, 2\n';
  const err = expectConfigError(() => parseAgentConfig(text, AGENT), AGENT, '', /invalid YAML at line \d+, column \d+/);
  assert.equal(err.problems.length, 1);
  assert.equal(typeof err.problems[0].line, 'number');

  expectConfigError(() => parseAgentConfig('agent: {name: a}\nagent: {name: b}\n', AGENT), AGENT, '', /line 2, column 1: Map keys must be unique/);
  expectConfigError(() => parseAgentConfig('a:\n\tb: 1\n', AGENT), AGENT, '', /invalid YAML at line 2/);
  // An unquoted cron expression starting with * is a YAML alias: say so.
  const cron = yaml(minimalAgent()).replace('schedule: 0 2 * * *', 'schedule: */5 * * * *');
  assert.notEqual(cron, yaml(minimalAgent()));
  expectConfigError(() => parseAgentConfig(cron, AGENT), AGENT, '', /must be quoted/);
});

test('empty files and non-mappings are refused clearly', () => {
  expectConfigError(() => parseAgentConfig('', AGENT), AGENT, '', /the file is empty/);
  expectConfigError(() => parseAgentConfig('# nothing here\n', AGENT), AGENT, '', /the file is empty/);
  expectConfigError(() => parseServerConfig('\n', SERVER), SERVER, '', /the file is empty/);
  expectConfigError(() => parseAgentConfig('- a\n- b\n', AGENT), AGENT, '', /expected a mapping .* got a list/);
  expectConfigError(() => parseAgentConfig('hello\n', AGENT), AGENT, '', /got "hello"/);
});

test('a missing or unreadable file is named', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'nbackup-config-'));
  try {
    const missing = path.join(dir, 'nope.yaml');
    await assert.rejects(loadAgentConfig(missing), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, missing);
      assert.match(err.message, new RegExp(`^${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: config file not found`));
      return true;
    });
    await assert.rejects(loadServerConfig(dir), /is a folder, not a config file/);
    const bad = path.join(dir, 'server.yaml');
    await writeFile(bad, serverWith((s) => (s.storages = { scripts: { base_dir: '/x', max_backups: 0 } })));
    await assert.rejects(loadServerConfig(bad), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `${bad}: storages.scripts.max_backups: expected an integer ≥ 1, got 0`);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('unknown keys are errors, named by their full key path', () => {
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.compresion = { level: 2 })), AGENT), AGENT, 'compresion', /unknown key/);
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].exclud = ['*.log'])), AGENT),
    AGENT,
    'backups[1].exclud',
    /unknown key \(allowed here: name, storage, schedule, .*exclude/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].resume = { chunk_size: '1mb', chunksize: '2mb' })), AGENT),
    AGENT,
    'backups[1].resume.chunksize',
    /unknown key/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].sources = [{ path: '/a' }, { path: '/b', recursive: true }])), AGENT),
    AGENT,
    'backups[1].sources[1].recursive',
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.daemon = { control_channel: { keepalive: '10s' } })), AGENT),
    AGENT,
    'daemon.control_channel.keepalive',
  );
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { scripts: { base_dir: '/x', max_backup: 3 } })), SERVER),
    SERVER,
    'storages.scripts.max_backup',
  );
  expectConfigError(() => parseServerConfig(serverWith((s) => (s.backups = [])), SERVER), SERVER, 'backups', /unknown key/);
});

test('wrong types say what was expected and what was found', () => {
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].parallels = 'four')), AGENT),
    AGENT,
    'backups[1].parallels',
    /expected an integer between 0 and 255, got "four"/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[0].auto_scaler = { enabled: 'yes' })), AGENT),
    AGENT,
    'backups[0].auto_scaler.enabled',
    /expected true or false, got "yes"/,
  );
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.backups = { name: 'x' })), AGENT), AGENT, 'backups', /got a mapping/);
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.agent = { name: 42 })), AGENT), AGENT, 'agent.name', /got 42 \(quote it\)/);
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.retry = 'fast')), AGENT), AGENT, 'retry', /expected a mapping/);
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.retry = { read_timeout: 60 })), AGENT),
    AGENT,
    'retry.read_timeout',
    /got 60 \(a bare number is ambiguous: add a unit\)/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.logging = { level: 'verbose' })), AGENT),
    AGENT,
    'logging.level',
    /expected one of trace, debug, info, warn, error, fatal, silent, got "verbose"/,
  );
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[0].exclude = '*.log')), AGENT), AGENT, 'backups[0].exclude', /expected a list/);
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = [{ base_dir: '/x' }])), SERVER),
    SERVER,
    'storages',
    /expected a mapping of storage name/,
  );
});

test('missing required keys are named', () => {
  const err = expectConfigError(() => parseAgentConfig(agentWith((a) => delete a.tls), AGENT), AGENT, 'tls', /missing required key/);
  assert.equal(err.problems[0].line, undefined, 'a missing key has no line of its own');
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.tls = { ca_cert: '/ca.pem', client_cert: '/c.pem' })), AGENT),
    AGENT,
    'tls.client_key',
    /missing required key \(expected a path/,
  );
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => delete b[1].schedule), AGENT), AGENT, 'backups[1].schedule', /missing required key/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => delete b[1].sources), AGENT), AGENT, 'backups[1].sources', /missing required key/);
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.server = {})), AGENT), AGENT, 'server.address', /missing required key/);
  expectConfigError(() => parseServerConfig(serverWith((s) => delete s.storages), SERVER), SERVER, 'storages', /missing required key/);
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { scripts: { max_backups: 2 } })), SERVER),
    SERVER,
    'storages.scripts.base_dir',
    /missing required key/,
  );
});

test('impossible values: sizes, ranges, addresses, empty lists', () => {
  const err = expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].resume = { chunk_size: '32kb' })), AGENT),
    AGENT,
    'backups[1].resume.chunk_size',
  );
  assert.equal(err.message, `${AGENT}: backups[1].resume.chunk_size: expected a size between 64kb and 16mb, got "32kb"`);
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.resume = { buffer_size: '2gb' })), AGENT),
    AGENT,
    'resume.buffer_size',
    /expected a size between 1mb and 1gb, got "2gb"/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.resume = { chunk_size: 'lots' })), AGENT),
    AGENT,
    'resume.chunk_size',
    /expected a size between 64kb and 16mb \(like .*\), got "lots"/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.resume = { buffer_size: '1mb', chunk_size: '4mb' })), AGENT),
    AGENT,
    'resume.buffer_size',
    /must be at least chunk_size \(4mb\), got 1mb/,
  );
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].resume = { buffer_size: '2mb', chunk_size: '4mb' })), AGENT),
    AGENT,
    'backups[1].resume.buffer_size',
  );
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[0].parallels = 256)), AGENT), AGENT, 'backups[0].parallels', /got 256/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[0].parallels = 1.5)), AGENT), AGENT, 'backups[0].parallels');
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.compression = { level: 0 })), AGENT), AGENT, 'compression.level', /between 1 and 9/);
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.retry = { max_attempts: 0 })), AGENT), AGENT, 'retry.max_attempts');
  expectConfigError(
    () => parseAgentConfig(agentWith((a) => (a.retry = { initial_delay: '10m', max_delay: '1m' })), AGENT),
    AGENT,
    'retry.max_delay',
    /at least retry.initial_delay/,
  );
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.retry = { read_timeout: '0s' })), AGENT), AGENT, 'retry.read_timeout');
  for (const address of ['backup.example.com', 'backup.example.com:0', 'h:65536', ':9847', '::1:9847', 'a b:1', 9847]) {
    expectConfigError(
      () => parseAgentConfig(agentWith((a) => (a.server = { address })), AGENT),
      AGENT,
      'server.address',
      /expected host:port with a port between 1 and 65535/,
    );
  }
  expectConfigError(() => parseServerConfig(serverWith((s) => (s.server = { listen: '0.0.0.0:70000' })), SERVER), SERVER, 'server.listen');
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.backups = [])), AGENT), AGENT, 'backups', /at least 1 entry, got an empty list/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[1].sources = [])), AGENT), AGENT, 'backups[1].sources', /at least 1 entry/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[1].sources = [{ path: '' }])), AGENT), AGENT, 'backups[1].sources[0].path');
  expectConfigError(() => parseServerConfig(serverWith((s) => (s.storages = {})), SERVER), SERVER, 'storages', /at least one storage/);
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { scripts: { base_dir: '/x', min_free: '-1gb' } })), SERVER),
    SERVER,
    'storages.scripts.min_free',
  );
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { a: { base_dir: '/x' }, b: { base_dir: '/x/' } })), SERVER),
    SERVER,
    'storages.b.base_dir',
    /already the base_dir of storage "a"/,
  );
});

test('bad cron schedules are refused', () => {
  for (const [schedule, why] of [
    ['0 2 * *', /\(4 fields\)/],
    ['0 0 2 * * * 2030', /\(7 fields\)/],
    ['@daily', /\(1 field\)/],
    ['61 2 * * *', /61/],
    ['0 25 * * *', /25/],
    ['every day', /\(2 fields\)/],
    ['a b c d e', /expected a cron expression/],
  ] as const) {
    expectConfigError(
      () => parseAgentConfig(agentWith((_a, b) => (b[1].schedule = schedule)), AGENT),
      AGENT,
      'backups[1].schedule',
      why,
    );
  }
  expectConfigError(
    () => parseServerConfig(serverWith((s) => ((s.server as Record<string, unknown>).verify = { schedule: '0 4 * *' })), SERVER),
    SERVER,
    'server.verify.schedule',
    /\(4 fields\)/,
  );
});

test('duplicate backup names are refused, naming the second one', () => {
  expectConfigError(
    () => parseAgentConfig(agentWith((_a, b) => (b[1].name = 'app')), AGENT),
    AGENT,
    'backups[1].name',
    /duplicate backup name "app" \(already used by backups\[0\]\)/,
  );
});

test('names that cannot be folder names are refused', () => {
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.agent = { name: '..' })), AGENT), AGENT, 'agent.name', /invalid agent name "\.\.": it may not be "\.\."/);
  expectConfigError(() => parseAgentConfig(agentWith((a) => (a.agent = { name: '' })), AGENT), AGENT, 'agent.name', /is empty/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[1].name = 'a/b')), AGENT), AGENT, 'backups[1].name', /may not contain "\/"/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[1].name = '.hidden')), AGENT), AGENT, 'backups[1].name', /may not start with "\."/);
  expectConfigError(() => parseAgentConfig(agentWith((_a, b) => (b[0].storage = '..')), AGENT), AGENT, 'backups[0].storage', /invalid storage name/);
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { '..': { base_dir: '/x' } })), SERVER),
    SERVER,
    'storages[".."]',
    /invalid storage name "\.\.": it may not be "\.\."/,
  );
  expectConfigError(
    () => parseServerConfig(serverWith((s) => (s.storages = { 'a\\b': { base_dir: '/x' } })), SERVER),
    SERVER,
    'storages["a\\\\b"]',
  );
});

test('several problems are all reported, one per line, in file order', () => {
  const text = agentWith((a, b) => {
    a.agent = { name: '..' };
    b[1].resume = { chunk_size: '32kb' };
    a.extra = true;
  });
  const err = expectConfigError(() => parseAgentConfig(text, AGENT), AGENT, 'agent.name');
  assert.deepEqual(
    err.problems.map((p) => p.keyPath),
    ['agent.name', 'backups[1].resume.chunk_size', 'extra'],
  );
  const lines = err.message.split('\n');
  assert.equal(lines.length, 3);
  for (const line of lines) assert.ok(line.startsWith(`${AGENT}: `), line);
  assert.ok(err.problems.every((p) => typeof p.line === 'number' && p.line > 0));
});

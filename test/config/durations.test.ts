/**
 * Every duration key ends up in a setTimeout or setInterval, which fires after ~1 ms when given
 * more than 2^31-1 ms. So the config refuses such a duration, naming the key and the maximum.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAgentConfig, parseServerConfig } from '../../src/config/index.js';
import { expectConfigError, minimalAgent, minimalServer, yaml } from './helpers.js';

const AGENT = 'conf/agent.yaml';
const SERVER = 'conf/server.yaml';
const TIMER_MAX_MS = 2 ** 31 - 1;

/** Sets `value` at a dotted path (numbers index lists), making mappings on the way. */
function setAt(root: Record<string, unknown>, keyPath: string, value: unknown): void {
  const keys = keyPath.split('.');
  let at: Record<string, unknown> = root;
  for (const k of keys.slice(0, -1)) {
    at[k] ??= {};
    at = at[k] as Record<string, unknown>;
  }
  at[keys[keys.length - 1]] = value;
}

/** Every duration key of agent.yaml, as set here and as named in the message. */
const AGENT_KEYS: [string, string][] = [
  ['backups.1.run_limit', 'backups[1].run_limit'],
  ['backups.0.hook_timeout', 'backups[0].hook_timeout'],
  ['retry.initial_delay', 'retry.initial_delay'],
  ['retry.max_delay', 'retry.max_delay'],
  ['retry.read_timeout', 'retry.read_timeout'],
  ['retry.connect_timeout', 'retry.connect_timeout'],
  ['daemon.shutdown_grace', 'daemon.shutdown_grace'],
  ['daemon.control_channel.keepalive_interval', 'daemon.control_channel.keepalive_interval'],
  ['daemon.control_channel.reconnect_delay', 'daemon.control_channel.reconnect_delay'],
  ['daemon.control_channel.max_reconnect_delay', 'daemon.control_channel.max_reconnect_delay'],
];

const SERVER_KEYS = ['server.handshake_timeout', 'server.session_ttl', 'server.idle_timeout', 'server.flow_rotation.window'];

test('a duration a timer cannot hold (600h) is refused at every duration key, naming the key and the maximum', () => {
  for (const [set, named] of AGENT_KEYS) {
    const a = minimalAgent();
    setAt(a, set, '600h');
    expectConfigError(() => parseAgentConfig(yaml(a), AGENT), AGENT, named, /expected a duration (between \S+ and|of at most) 596h .*got "600h"/);
  }
  for (const key of SERVER_KEYS) {
    const s = minimalServer();
    setAt(s, key, '600h');
    expectConfigError(() => parseServerConfig(yaml(s), SERVER), SERVER, key, /expected a duration (between \S+ and|of at most) 596h .*got "600h"/);
  }
});

test('just above the timer limit is refused; the maximum itself is accepted and fits a timer', () => {
  const a = minimalAgent();
  setAt(a, 'backups.0.run_limit', `${TIMER_MAX_MS + 1}ms`);
  expectConfigError(() => parseAgentConfig(yaml(a), AGENT), AGENT, 'backups[0].run_limit', /596h/);

  const ok = minimalAgent();
  setAt(ok, 'backups.0.run_limit', '596h');
  const limit = parseAgentConfig(yaml(ok), AGENT).backups[0].run_limit;
  assert.equal(limit, 596 * 3_600_000);
  assert.ok(limit <= TIMER_MAX_MS);

  const s = minimalServer();
  setAt(s, 'server.session_ttl', '596h');
  assert.equal(parseServerConfig(yaml(s), SERVER).server.session_ttl, 596 * 3_600_000);
});

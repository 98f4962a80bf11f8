/**
 * Sources of one backup entry that are the same folder, or one inside another, would store their
 * files twice (and a restore into an empty folder then fails on the second copy): refused at load.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAgentConfig } from '../../src/config/index.js';
import { expectConfigError, minimalAgent, yaml } from './helpers.js';

const AGENT = 'conf/agent.yaml';

function withSources(entry: number, paths: string[]): string {
  const a = minimalAgent();
  (a.backups as Record<string, unknown>[])[entry].sources = paths.map((p) => ({ path: p }));
  return yaml(a);
}

test('a source inside another source of the same entry is refused, naming both', () => {
  expectConfigError(
    () => parseAgentConfig(withSources(1, ['/srv/app', '/srv/app/sub']), AGENT),
    AGENT,
    'backups[1].sources[1]',
    /"\/srv\/app\/sub" is inside backups\[1\]\.sources\[0\] \("\/srv\/app"\)/,
  );
  // The outer one later in the list: still named against the earlier one.
  expectConfigError(
    () => parseAgentConfig(withSources(0, ['/etc', '/srv/app/data', '/srv']), AGENT),
    AGENT,
    'backups[0].sources[2]',
    /"\/srv" holds backups\[0\]\.sources\[1\] \("\/srv\/app\/data"\)/,
  );
  expectConfigError(() => parseAgentConfig(withSources(0, ['/srv', '/']), AGENT), AGENT, 'backups[0].sources[1]', /"\/" holds backups\[0\]\.sources\[0\]/);
});

test('the same folder twice, however it is written, is refused', () => {
  expectConfigError(
    () => parseAgentConfig(withSources(0, ['/srv/app/', '/srv/./x/../app']), AGENT),
    AGENT,
    'backups[0].sources[1]',
    /"\/srv\/app" is the same path as backups\[0\]\.sources\[0\]/,
  );
});

test('neighbours that only share a prefix, and the same folder in two entries, are fine', () => {
  const a = minimalAgent();
  const backups = a.backups as Record<string, unknown>[];
  backups[0].sources = [{ path: '/srv/app' }, { path: '/srv/app2' }, { path: '/srv/ap' }];
  backups[1].sources = [{ path: '/srv/app' }];
  const c = parseAgentConfig(yaml(a), AGENT);
  assert.deepEqual(c.backups[0].sources.map((s) => s.path), ['/srv/app', '/srv/app2', '/srv/ap']);
});

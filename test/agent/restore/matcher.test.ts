import assert from 'node:assert/strict';
import { test } from 'node:test';
import { memberMatcher } from '../../../src/agent/restore/commands.js';

test('restore patterns: paths select themselves and what is under them; globs likewise; a leading or trailing / is ignored', () => {
  assert.equal(memberMatcher([]), undefined, 'no pattern: everything');
  const lit = memberMatcher(['/usr/lib/', 'etc/hosts'])!;
  for (const yes of ['usr/lib', 'usr/lib/x/y.so', 'etc/hosts']) assert.equal(lit(yes), true, yes);
  for (const no of ['usr/lib64/a', 'usr/li', 'usr', 'etc/hosts.allow', 'etc/hostsx/a', 'x/usr/lib']) assert.equal(lit(no), false, no);
  const glob = memberMatcher(['**/*.conf', 'var/log/n*'])!;
  for (const yes of ['etc/a.conf', 'a/b/c.conf', 'var/log/nginx', 'var/log/nginx/access.log']) assert.equal(glob(yes), true, yes);
  for (const no of ['etc/a.confx', 'var/log/apache/n.log', 'var/logs/nginx']) assert.equal(glob(no), false, no);
  const escaped = memberMatcher(['data/a\\*b'])!;
  assert.equal(escaped('data/a*b'), true);
  assert.equal(escaped('data/axb'), false);
});

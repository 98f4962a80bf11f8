import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runLimit } from '../../src/agent/run-limit.js';
import { NbackupError } from '../../src/errors.js';

test('a run that outlives its limit is aborted with a reason that names the entry and the limit', async () => {
  const limit = runLimit('app', 30);
  // The limit's own timer does not keep a process alive; this bounded one keeps the test's.
  const guard = setTimeout(() => assert.fail('the run limit never fired'), 5000);
  const reason = await new Promise<unknown>((resolve) => limit.signal.addEventListener('abort', () => resolve(limit.signal.reason), { once: true }));
  clearTimeout(guard);
  assert.ok(reason instanceof NbackupError);
  assert.equal(reason.kind, 'aborted', 'not a timeout: retrying cannot cure it');
  assert.equal(reason.message, 'backup "app" was stopped: it ran longer than its run limit of 30ms');
});

import assert from 'node:assert/strict';
import { addonProblem } from '../../src/native/addons.js';

/**
 * `value` got from the nbackup_fs addon, or null without it: a missing addon fails the test unless
 * NBACKUP_ALLOW_ZLIB=1 says it may be absent (then the test notes why and does nothing).
 */
export function fsAddonOrAllowed<T>(value: T | null, t: { diagnostic(m: string): void }): T | null {
  if (value) return value;
  const problem = addonProblem('nbackup_fs');
  assert.equal(process.env.NBACKUP_ALLOW_ZLIB, '1', `the nbackup_fs addon is expected: ${problem}`);
  t.diagnostic(`nbackup_fs missing, allowed by NBACKUP_ALLOW_ZLIB: ${problem}`);
  return null;
}

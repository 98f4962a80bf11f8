import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExcludeMatcher } from '../../../src/agent/pipeline/exclude.js';

test('patterns match the relative path or the basename, as the contract says', () => {
  const m = new ExcludeMatcher(['*.log', '.git/**', 'node_modules/**', 'build/out']);
  assert.equal(m.excludes('app.log'), true);
  assert.equal(m.excludes('sub/deep/x.log'), true);
  assert.equal(m.excludes('keep/app.log.txt'), false);
  assert.equal(m.excludes('.git'), true);
  assert.equal(m.excludes('sub/.git'), true, 'a .git directory at any depth (pruned there)');
  assert.equal(m.excludes('.gitignore'), false);
  assert.equal(m.excludes('node_modules'), true);
  assert.equal(m.excludes('build/out'), true);
  assert.equal(m.excludes('x/build/out'), false, 'a path pattern is anchored at the source');
  assert.equal(new ExcludeMatcher([]).excludes('anything'), false);
});

/**
 * At backup time the sources are compared by their real paths: a source that is a symlink may
 * point into another source, which the config (plain paths) cannot see. The backup then fails
 * before anything is sent, naming both sources.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkSources } from '../../../src/agent/pipeline/scanner.js';
import { NbackupError } from '../../../src/errors.js';

function tree(): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-overlap-')));
  fs.mkdirSync(path.join(dir, 'data', 'sub'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'data', 'sub', 'f.txt'), 'x\n');
  fs.mkdirSync(path.join(dir, 'other'));
  return dir;
}

test('a symlinked source that points inside another source is refused, both named', () => {
  const dir = tree();
  try {
    const link = path.join(dir, 'link-to-sub');
    fs.symlinkSync(path.join(dir, 'data', 'sub'), link);
    const data = path.join(dir, 'data');
    for (const sources of [[data, link], [link, data]]) {
      assert.throws(
        () => checkSources(sources),
        (err: unknown) => {
          assert.ok(err instanceof NbackupError);
          assert.equal(err.kind, 'source');
          assert.ok(err.message.includes(`${link} (a symlink to ${path.join(data, 'sub')})`), err.message);
          assert.ok(err.message.includes(`is inside source ${data}`), err.message);
          assert.match(err.message, /would be stored twice/);
          return true;
        },
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a symlink to the same folder as another source is refused; separate folders pass', () => {
  const dir = tree();
  try {
    const data = path.join(dir, 'data');
    const alias = path.join(dir, 'alias');
    fs.symlinkSync('data', alias);
    assert.throws(() => checkSources([data, alias]), /alias \(a symlink to .*data\) is the same folder as source .*data/);
    // A symlink inside a source is archived as a link, never followed: no overlap.
    fs.symlinkSync('../other', path.join(data, 'to-other'));
    checkSources([data, path.join(dir, 'other')]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

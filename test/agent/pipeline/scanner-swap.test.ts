import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { scanSources, scanWithRuns, type ScanEntry, type ScanWarning } from '../../../src/agent/pipeline/scanner.js';
import type { FileRun } from '../../../src/agent/pipeline/file-run.js';

/**
 * A folder swapped for a symlink (or its parent swapped) while the scanner walks: someone who may
 * write in the tree races a root agent to have it archive what the symlink points to. The walk
 * is driven by hand, and the swap made while it is paused at the very step in between: after it
 * has handed out the folder's own entry and before it lists the folder.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-swap-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

function tree(base: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(base, rel)), { recursive: true });
    fs.writeFileSync(path.join(base, rel), text);
  }
}

/** Walks `src`, calling `at(entry)` while the walk is paused on each entry; member names under src. */
function walk(src: string, runs: boolean, at: (e: ScanEntry) => void): { names: string[]; warnings: ScanWarning[] } {
  const warnings: ScanWarning[] = [];
  const names: string[] = [];
  const under = (n: Buffer): string => `/${n.toString()}`.slice(src.length + 1);
  const opts = { exclude: [], onWarning: (w: ScanWarning) => warnings.push(w) };
  for (const item of runs ? scanWithRuns([src], opts) : scanSources([src], opts)) {
    if ((item as FileRun).type === 'run') {
      const run = item as FileRun;
      const dir = under(run.dirName);
      for (const base of run.names.toString().split('\0').slice(0, -1)) names.push(dir === '' ? base : `${dir}/${base}`);
      continue;
    }
    const e = item as ScanEntry;
    names.push(under(e.name));
    at(e);
  }
  return { names, warnings };
}

for (const runs of [false, true]) {
  test(`a folder swapped for a symlink before it is listed is not followed (${runs ? 'runs' : 'one by one'})`, () => {
    const src = path.join(root, `a-${runs}`);
    const secret = path.join(root, `secret-a-${runs}`);
    tree(src, { 'a/mine.txt': 'mine', 'z.txt': 'z' });
    tree(secret, { 'shadow.txt': 'root only' });
    const { names, warnings } = walk(src, runs, (e) => {
      if (e.name.toString().endsWith(`a-${runs}/a`)) {
        fs.renameSync(path.join(src, 'a'), path.join(root, `a-moved-${runs}`));
        fs.symlinkSync(secret, path.join(src, 'a'));
      }
    });
    // Before, the listing followed the link: a/shadow.txt was archived from the secret folder.
    assert.deepEqual(names, ['', 'a', 'z.txt'], JSON.stringify(names));
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.match(warnings[0].path, /\/a$/);
    assert.match(warnings[0].message, /was replaced/);
  });

  test(`a parent swapped for a symlink while its child folder is about to be listed: the walk stays in the folder it opened (${runs ? 'runs' : 'one by one'})`, () => {
    const src = path.join(root, `b-${runs}`);
    const decoy = path.join(root, `decoy-b-${runs}`);
    tree(src, { 'b/c/1.txt': 'one', 'b/c/2.txt': 'two', 'b/d.txt': 'd' });
    tree(decoy, { 'c/shadow.txt': 'root only', 'd.txt': 'decoy' });
    const { names, warnings } = walk(src, runs, (e) => {
      if (e.name.toString().endsWith(`b-${runs}/b/c`)) {
        fs.renameSync(path.join(src, 'b'), path.join(root, `b-moved-${runs}`));
        fs.symlinkSync(decoy, path.join(src, 'b'));
      }
    });
    // Before, b/c was listed by path through the new link: the decoy's c/shadow.txt was archived.
    assert.deepEqual(names, ['', 'b', 'b/c', 'b/c/1.txt', 'b/c/2.txt', 'b/d.txt'], JSON.stringify(names));
    assert.deepEqual(warnings, []);
  });
}

test('a source that is a symlink to a folder is still followed on purpose', () => {
  const real = path.join(root, 'real');
  tree(real, { 'x/1.txt': '1' });
  const link = path.join(root, 'link-to-real');
  fs.symlinkSync(real, link);
  const { names, warnings } = walk(link, false, () => undefined);
  assert.deepEqual(names, ['', 'x', 'x/1.txt']);
  assert.deepEqual(warnings, []);
});

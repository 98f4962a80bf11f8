/**
 * The small-files dataset (`--small-files N`): N files of 1-4 KiB in folders of 1000 (or
 * `--per-folder N`: all in one, for a huge directory), where the per-file costs (scan, stat, open,
 * header, read) dominate. Contents are words drawn from a small
 * vocabulary with a few random bytes, so they compress about as well as text and config files do.
 * Deterministic (seeded), written once per benchmark run.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STEP_TIMEOUT_MS, log, run } from './util.js';

const WORDS = 'backup stream chunk server agent archive storage config value path error retry offset session index table row user group time size'.split(' ');

/** A small deterministic PRNG (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function content(next: () => number): Buffer {
  const size = 1024 + Math.floor(next() * 3 * 1024);
  const b = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    if (next() < 0.05) {
      b[at++] = Math.floor(next() * 256);
      continue;
    }
    const w = WORDS[Math.floor(next() * WORDS.length)];
    at += b.write(`${w} `, at, 'latin1');
  }
  return b;
}

/** Writes N files under `root` (created); returns `root`. */
export async function makeSmallFiles(root: string, n: number, perDir = 1000): Promise<string> {
  const next = rng(20261121);
  const started = performance.now();
  for (let d = 0; d * perDir < n; d++) {
    const dir = join(root, `d${String(d).padStart(4, '0')}`);
    await mkdir(dir, { recursive: true });
    const last = Math.min(n, (d + 1) * perDir);
    // At most 1000 writes under way: a folder may hold all N files.
    for (let from = d * perDir; from < last; from += 1000) {
      const writes: Promise<void>[] = [];
      for (let i = from; i < Math.min(last, from + 1000); i++) writes.push(writeFile(join(dir, `f${i}.txt`), content(next)));
      await Promise.all(writes);
    }
  }
  // Written back now, not by the kernel's flusher in the middle of the first timed run.
  const synced = await run('sync', ['-f', root], { timeoutMs: STEP_TIMEOUT_MS });
  if (synced.code !== 0) log(`warning: sync -f ${root} exited with ${synced.code}: ${synced.stderr.trim()}`);
  log(`${n.toLocaleString('en-US')} small files written and synced in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return root;
}

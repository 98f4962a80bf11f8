import fs from 'node:fs';
import { scanSources } from './pipeline/scanner.js';

/**
 * For `--progress`: how many bytes of file data a backup will read, from a walk of its sources
 * (with its excludes) beside the backup itself. The walk yields the event loop every BATCH
 * entries so the backup never waits on it; it is an estimate (files change meanwhile), and null
 * when the walk is stopped by `signal`.
 */
const BATCH = 2000;

export async function estimateFileBytes(sources: readonly string[], exclude: readonly string[], signal?: AbortSignal): Promise<number | null> {
  let total = 0;
  let n = 0;
  const quiet = (): void => undefined;
  for (const entry of scanSources(sources, { exclude, onWarning: quiet, onNotice: quiet })) {
    if (signal?.aborted) return null;
    if (entry.type === 'file') {
      try {
        total += (entry.stats ?? fs.lstatSync(entry.access)).size;
      } catch {
        /* gone already: the backup will say so */
      }
    }
    if (++n % BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  return total;
}

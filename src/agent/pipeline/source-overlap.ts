import fs from 'node:fs';
import { overlap, type Overlap } from '../../config/path-overlap.js';
import { NbackupError, errorMessage } from '../../errors.js';

/**
 * Sources of one backup entry must not overlap: a folder given twice, or one inside another,
 * would have its files archived twice, and a restore into an empty folder then fails on the
 * second copy. The config compares the paths as written (agent-schema.ts); the backup compares
 * real paths, because a source that is a symlink may lead into another source.
 */
const WORDS: Record<Overlap, string> = { same: 'is the same folder as', inside: 'is inside', holds: 'holds' };

/** Fails (kind 'source') when the sources' real paths overlap, naming both; checked before anything is sent. */
export function checkSourceOverlap(sources: readonly string[]): void {
  const real = sources.map((s) => {
    try {
      return fs.realpathSync(s);
    } catch (err) {
      throw new NbackupError('source', `source ${s}: cannot resolve its real path: ${errorMessage(err)}`);
    }
  });
  const shown = (k: number): string => (real[k] === sources[k] ? sources[k] : `${sources[k]} (a symlink to ${real[k]})`);
  for (let j = 1; j < real.length; j++) {
    for (let i = 0; i < j; i++) {
      const how = overlap(real[j], real[i]);
      if (how === null) continue;
      // Say it from the inner one's side: that is the source to remove.
      const [inner, outer, word] = how === 'holds' ? [i, j, WORDS.inside] : [j, i, WORDS[how]];
      throw new NbackupError('source', `source ${shown(inner)} ${word} source ${shown(outer)}: the files they share would be stored twice; remove one of them from the entry`);
    }
  }
}

/**
 * How two absolute, normalised paths stand to each other. Sources of one backup entry must not
 * overlap (agent-schema.ts compares them as written; the backup compares real paths,
 * agent/pipeline/source-overlap.ts).
 */
export type Overlap = 'same' | 'inside' | 'holds';

/** How absolute, normalised path `a` stands to `b`: the same, inside it, holding it, or null. */
export function overlap(a: string, b: string): Overlap | null {
  if (a === b) return 'same';
  if (a.startsWith(b === '/' ? b : `${b}/`)) return 'inside';
  if (b.startsWith(a === '/' ? a : `${a}/`)) return 'holds';
  return null;
}

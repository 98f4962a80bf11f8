import type { ArchiveFormat } from '../config/index.js';

/**
 * Names of committed archives: `<UTC timestamp>.tar.gz` (or `.tar.zst`), like
 * `2026-02-11T02-00-00-000.tar.gz`, sortable as text, both formats in one order. Names must sort in commit order whatever the clock does, because rotation
 * keeps the last ones in that order: a clock set back would otherwise name a new archive before
 * the ones it follows, and rotation would delete the archive it had just committed.
 */
const ARCHIVE_NAME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})-(\d{3})\.tar\.(gz|zst)$/;

/** The file extension of each format. */
export const ARCHIVE_EXTENSION: Record<ArchiveFormat, string> = { gzip: 'tar.gz', zstd: 'tar.zst' };

/** A name the server could have given: the pattern, and a real time (no month 13, no 25 o'clock). */
export function isArchiveName(name: string): boolean {
  return archiveTime(name) !== null;
}

/** `2026-02-11T02-00-00-000.tar.gz`: UTC, no ':' so it is safe on every filesystem. */
export function archiveName(ms: number, format: ArchiveFormat): string {
  return `${new Date(ms).toISOString().replace(/:/g, '-').replace('.', '-').replace(/Z$/, '')}.${ARCHIVE_EXTENSION[format]}`;
}

/** The time an archive name stands for, in ms since the epoch. */
export function archiveTime(name: string): number | null {
  const m = ARCHIVE_NAME.exec(name);
  if (!m) return null;
  const [y, mo, d, h, mi, s, ms] = m.slice(1, 8).map(Number);
  const t = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  // Date.UTC rolls 2026-13-45 over into 2027: such a name is no archive's.
  return archiveName(t, 'gzip').slice(0, 23) === name.slice(0, 23) ? t : null;
}

/**
 * The time to name a new archive after: now, or 1 ms after the newest existing archive when the
 * clock is behind it (then `behindMs` says by how much).
 */
export function nextArchiveTime(existing: readonly string[], now: number): { at: number; behindMs: number } {
  let newest = -Infinity;
  for (const n of existing) {
    const t = archiveTime(n);
    if (t !== null && t > newest) newest = t;
  }
  if (now > newest) return { at: now, behindMs: 0 };
  return { at: newest + 1, behindMs: newest - now };
}

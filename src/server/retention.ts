/**
 * Which archives a storage keeps: grandfather-father-son over UTC calendar periods, as a pure
 * function of the archives' times and the policy.
 *
 * - `last`: the newest N archives.
 * - `hourly` / `daily` / `weekly` (ISO weeks, Monday first) / `monthly` / `yearly`: the newest archive
 *   of each of the N most recent periods that have one (a period without backups is not counted,
 *   so a host that was down for a while keeps as many copies as one that was not).
 *
 * An archive is deleted only when no rule keeps it. A burst of backups (however many) falls into
 * the current hour and day: it can push archives out of `last` and `hourly` only, never the newest
 * archive of an earlier day, week, month or year that a period rule keeps.
 */
export interface KeepPolicy {
  last: number;
  hourly: number;
  daily: number;
  weekly: number;
  monthly: number;
  yearly: number;
}

export const PERIODS = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type Period = (typeof PERIODS)[number];

export interface RetentionDecision {
  /** The archive's time (ms since the epoch) and whatever the caller keys it by. */
  time: number;
  name: string;
  keep: boolean;
  /** Why it is kept: `last 2/5`, `daily 2026-11-21`, … (empty when it is deleted). */
  reasons: string[];
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, '0');
}

/** The ISO 8601 week of a UTC time: `2026-W47` (the week's year can differ from the date's). */
export function isoWeek(ms: number): string {
  const d = new Date(ms);
  const day = (d.getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - day + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return `${year}-W${pad(week)}`;
}

/** The UTC period an archive falls in, as a label that is also its key. */
export function periodOf(period: Period, ms: number): string {
  const d = new Date(ms);
  const ymd = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  switch (period) {
    case 'hourly':
      return `${ymd}T${pad(d.getUTCHours())}`;
    case 'daily':
      return ymd;
    case 'weekly':
      return isoWeek(ms);
    case 'monthly':
      return ymd.slice(0, 7);
    case 'yearly':
      return String(d.getUTCFullYear());
  }
}

/** Decides for every archive; the input order does not matter, the output is newest first. */
export function selectRetention(archives: readonly { name: string; time: number }[], policy: KeepPolicy): RetentionDecision[] {
  const sorted = [...archives].sort((a, b) => b.time - a.time || (a.name < b.name ? 1 : -1));
  const out: RetentionDecision[] = sorted.map((a) => ({ time: a.time, name: a.name, keep: false, reasons: [] }));
  out.forEach((d, i) => {
    if (i < policy.last) d.reasons.push(`last ${i + 1}/${policy.last}`);
  });
  for (const period of PERIODS) {
    const want = policy[period];
    const seen = new Set<string>();
    for (const d of out) {
      if (seen.size >= want) break;
      const key = periodOf(period, d.time);
      if (seen.has(key)) continue;
      seen.add(key);
      d.reasons.push(`${period} ${key}`);
    }
  }
  for (const d of out) d.keep = d.reasons.length > 0;
  return out;
}

/** A policy keeps at least one archive. */
export function keepsSomething(p: KeepPolicy): boolean {
  return p.last + PERIODS.reduce((n, k) => n + p[k], 0) > 0;
}

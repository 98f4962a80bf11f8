/**
 * Sizes and durations as people write them in config files. Sizes are binary (1kb = 1024 bytes);
 * durations must carry a unit, because a bare "30" could mean seconds or milliseconds.
 */

const KB = 1024;
export const MB = 1024 * KB;
export const GB = 1024 * MB;
const TB = 1024 * GB;

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: KB,
  kb: KB,
  kib: KB,
  m: MB,
  mb: MB,
  mib: MB,
  g: GB,
  gb: GB,
  gib: GB,
  t: TB,
  tb: TB,
  tib: TB,
};

const SIZE_EXPECTED = 'a size such as 512b, 64kb, 256mb, 1.5gb or a whole number of bytes';

/** Bytes from a whole number of bytes or a string like `256mb`, `1.5 GB`, `64k`, `512b`. */
export function parseSize(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) {
      throw new Error(`expected ${SIZE_EXPECTED}, got ${input}`);
    }
    return input;
  }
  if (typeof input !== 'string') {
    throw new Error(`expected ${SIZE_EXPECTED}, got ${typeof input}`);
  }
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$/i.exec(input.trim());
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  // Bytes are whole: "1.5" or "1.5b" is refused, "1.5kb" is not.
  if (!m || unit === undefined || (unit === 1 && !/^\d+$/.test(m[1]))) {
    throw new Error(`expected ${SIZE_EXPECTED}, got ${JSON.stringify(input)}`);
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) {
    throw new Error(`size ${JSON.stringify(input)} is too large`);
  }
  return bytes;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Longest duration a config may set. Every duration ends up in a setTimeout or setInterval, which
 * fires after ~1 ms when given more than 2^31-1 ms (24.8 days); 596h is the last whole hour below.
 */
export const MAX_DURATION_MS = 596 * 3_600_000;
const DURATION_EXPECTED = 'a duration with a unit such as 500ms, 30s, 5m, 1h or 1h30m';

/** Milliseconds from a string like `500ms`, `30s`, `5m`, `1h30m`, `1.5s`. A bare number is refused. */
export function parseDuration(input: string): number {
  if (typeof input !== 'string') {
    const hint = typeof input === 'number' ? ' (a bare number is ambiguous: add a unit)' : '';
    throw new Error(`expected ${DURATION_EXPECTED}, got ${String(input)}${hint}`);
  }
  const text = input.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) {
    throw new Error(`expected ${DURATION_EXPECTED}, got ${JSON.stringify(input)} (a bare number is ambiguous: add a unit)`);
  }
  const part = /(\d+(?:\.\d+)?)\s*(ms|h|m|s)\s*/gy;
  let total = 0;
  let consumed = 0;
  let parts = 0;
  for (let m = part.exec(text); m !== null; m = part.exec(text)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    consumed = part.lastIndex;
    parts++;
  }
  if (parts === 0 || consumed !== text.length) {
    throw new Error(`expected ${DURATION_EXPECTED}, got ${JSON.stringify(input)}`);
  }
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) {
    throw new Error(`duration ${JSON.stringify(input)} is too long`);
  }
  return ms;
}

function trimNumber(n: number, digits = 2): string {
  return String(Number(n.toFixed(digits)));
}

/** `268435456` → `256mb`, `1536` → `1.5kb`, `100` → `100b`. The output is accepted by parseSize. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const sign = n < 0 ? '-' : '';
  const abs = Math.abs(n);
  for (const [unit, size] of [['tb', TB], ['gb', GB], ['mb', MB], ['kb', KB]] as const) {
    if (abs >= size) return `${sign}${trimNumber(abs / size)}${unit}`;
  }
  return `${sign}${Math.round(abs)}b`;
}

/** `5400000` → `1h30m`, `1500` → `1.5s`, `250` → `250ms`. The output is accepted by parseDuration. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  const sign = ms < 0 ? '-' : '';
  let rest = Math.round(Math.abs(ms));
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  let out = '';
  if (h > 0) out += `${h}h`;
  if (m > 0) out += `${m}m`;
  if (rest > 0) out += `${trimNumber(rest / 1000, 3)}s`;
  return sign + out;
}

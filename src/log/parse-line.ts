/** One JSON log line as read back (by the tests and the benchmark). */
export type LogLine = Record<string, unknown>;

/** Parses one JSON log line; null for anything that is not a JSON object. */
export function parseLogLine(line: string): LogLine | null {
  const t = line.trim();
  if (!t.startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(t);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as LogLine) : null;
  } catch {
    return null;
  }
}

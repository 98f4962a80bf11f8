/**
 * Agent, storage and backup names become path components on the server, so the rules here are the
 * only thing between a client and the rest of the disk. Returns why a name is refused, or null.
 */
const MAX_NAME_BYTES = 255;

export function nameProblem(name: string): string | null {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return `is longer than ${MAX_NAME_BYTES} bytes`;
  if (name === '.' || name === '..') return `may not be "${name}"`;
  if (name.startsWith('.')) return 'may not start with "."';
  if (name.includes('/')) return 'may not contain "/"';
  if (name.includes('\\')) return 'may not contain "\\"';
  if (name.includes('\0')) return 'may not contain NUL';
  // Control characters would make log lines and file listings ambiguous.
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return 'may not contain control characters';
  return null;
}

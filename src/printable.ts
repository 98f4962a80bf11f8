import { isUtf8 } from 'node:buffer';

/**
 * Names and messages as they are printed for people on a terminal. A file name may hold any byte
 * but NUL and '/': printed raw, an ESC sequence recolours or retitles the operator's terminal and
 * a newline forges an output line. So control characters are escaped as GNU tar's
 * --quoting-style=escape does (\n, \t, \\, the rest as octal like \033), and so are the bytes of a
 * name that are not UTF-8; printable UTF-8 is kept as it is.
 */

const C_ESCAPES: Record<number, string> = { 0x07: '\\a', 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0b: '\\v', 0x0c: '\\f', 0x0d: '\\r', 0x5c: '\\\\' };

const octal = (byte: number): string => `\\${byte.toString(8).padStart(3, '0')}`;

/** C0 controls, DEL and the C1 controls (U+0080–U+009F, which some terminals obey too). */
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;
const CONTROLS_AND_BACKSLASH = /[\\\x00-\x1f\x7f-\x9f]/g;

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  // A C1 control is shown as its UTF-8 bytes, as GNU tar shows it.
  return code < 0x80 ? (C_ESCAPES[code] ?? octal(code)) : [...Buffer.from(c, 'utf8')].map(octal).join('');
}

/** Length of the valid UTF-8 sequence at `i`, or 0 when the byte there starts none. */
function sequenceAt(b: Buffer, i: number): number {
  const c = b[i];
  const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  return n > 0 && i + n <= b.length && isUtf8(b.subarray(i, i + n)) ? n : 0;
}

/** A name (exact bytes, or text) for a terminal: control characters, backslash and non-UTF-8 bytes escaped. */
export function printableName(name: Buffer | string): string {
  if (typeof name === 'string') return name.replace(CONTROLS_AND_BACKSLASH, escapeChar);
  if (isUtf8(name)) return name.toString('utf8').replace(CONTROLS_AND_BACKSLASH, escapeChar);
  let out = '';
  for (let i = 0; i < name.length; ) {
    const n = sequenceAt(name, i);
    out += n === 0 ? octal(name[i]) : name.toString('utf8', i, i + n).replace(CONTROLS_AND_BACKSLASH, escapeChar);
    i += n === 0 ? 1 : n;
  }
  return out;
}

/**
 * A message for a terminal: control characters escaped, backslashes left alone (a message may
 * carry names already escaped by printableName, and OS error text quoting raw ones).
 */
export function printableText(text: string): string {
  return text.replace(CONTROLS, escapeChar);
}

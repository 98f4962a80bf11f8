/**
 * The tar byte layout as pure functions: a POSIX ustar header, and a PAX extended header in front
 * of it whenever a value does not fit ustar (long or non-ASCII names and link targets, sizes of
 * 8 GiB and more, large ids, times before 1970). GNU tar reads both.
 *
 * We encode headers ourselves rather than through tar-stream's `pack` so that the packer can read
 * file data straight into the compressor's 1 MiB blocks (no per-entry stream, no copy); see
 * docs/design.md for the measurement.
 */
export const BLOCK = 512;

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'directory' | 'fifo' | 'char-device' | 'block-device';

export interface TarHeaderFields {
  /** Member name; directories get a trailing '/' added here. */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Content size; only regular files carry data. */
  size: number;
  /** Seconds since the epoch (may be fractional). */
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}

const TYPEFLAG: Record<TarEntryType, number> = {
  file: 0x30,
  hardlink: 0x31,
  symlink: 0x32,
  'char-device': 0x33,
  'block-device': 0x34,
  directory: 0x35,
  fifo: 0x36,
};

const MAX_OCTAL_7 = 0o7777777; // 8-byte fields: 7 digits + NUL
const MAX_OCTAL_11 = 0o77777777777; // 12-byte fields: 11 digits + NUL

// eslint-disable-next-line no-control-regex
const isAscii = (s: string): boolean => /^[\x01-\x7f]*$/.test(s);

/** Rounds a byte count up to whole 512-byte records. */
export function padTo512(n: number): number {
  return (n + BLOCK - 1) & ~(BLOCK - 1);
}

function writeOctal(buf: Buffer, offset: number, width: number, value: number): void {
  const digits = Math.floor(value).toString(8).padStart(width - 1, '0');
  buf.write(digits, offset, width - 1, 'ascii');
  buf[offset + width - 1] = 0;
}

/** Splits a name into ustar prefix (≤155) and name (≤100) at a '/', or null when it cannot. */
function splitUstarName(name: string): { prefix: string; name: string } | null {
  if (name.length <= 100) return { prefix: '', name };
  // The split must be at a '/' such that the tail fits 100 and the head fits 155.
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const head = name.slice(0, i);
    const tail = name.slice(i + 1);
    if (head.length > 155) return null;
    if (tail.length <= 100 && tail.length > 0) return { prefix: head, name: tail };
  }
  return null;
}

/** A PAX record: "<len> <key>=<value>\n" where len counts the whole record including itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body, 'utf8');
  const digits = String(bodyLen).length;
  let len = bodyLen + digits;
  if (String(len).length > digits) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

function ustarHeader(
  name: string,
  prefix: string,
  typeflag: number,
  f: { mode: number; uid: number; gid: number; size: number; mtime: number; linkname: string; devmajor: number; devminor: number },
): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  writeOctal(h, 100, 8, f.mode & 0o7777);
  writeOctal(h, 108, 8, f.uid);
  writeOctal(h, 116, 8, f.gid);
  writeOctal(h, 124, 12, f.size);
  writeOctal(h, 136, 12, f.mtime);
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h[156] = typeflag;
  h.write(f.linkname, 157, 100, 'utf8');
  h.write('ustar\u000000', 257, 8, 'ascii');
  writeOctal(h, 329, 8, f.devmajor);
  writeOctal(h, 337, 8, f.devminor);
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  writeOctal(h, 148, 7, sum);
  h[155] = 0x20;
  return h;
}

/** A stand-in ustar name for members whose real name lives in a PAX record. */
function asciiFallback(name: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const ascii = name.replace(/[^\x20-\x7e]/g, '_');
  return ascii.length <= max ? ascii : ascii.slice(ascii.length - max);
}

/**
 * Encodes the header record(s) of one member: either one 512-byte ustar header, or a PAX 'x'
 * header, its padded records, then the ustar header. The returned buffer's length is a multiple
 * of 512; the member's data (for files) follows it, padded to 512.
 */
export function encodeHeader(fields: TarHeaderFields): Buffer {
  const name = fields.type === 'directory' && !fields.name.endsWith('/') ? `${fields.name}/` : fields.name;
  const linkname = fields.linkname ?? '';
  const size = fields.type === 'file' ? fields.size : 0;
  const pax: string[] = [];

  let ustarName = name;
  let ustarPrefix = '';
  const split = isAscii(name) ? splitUstarName(name) : null;
  if (split) {
    ustarName = split.name;
    ustarPrefix = split.prefix;
  } else {
    pax.push(paxRecord('path', name));
    ustarName = asciiFallback(name, 100);
  }
  let ustarLink = linkname;
  if (!isAscii(linkname) || linkname.length > 100) {
    pax.push(paxRecord('linkpath', linkname));
    ustarLink = asciiFallback(linkname, 100);
  }
  let ustarSize = size;
  if (size > MAX_OCTAL_11) {
    pax.push(paxRecord('size', String(size)));
    ustarSize = 0;
  }
  let uid = fields.uid;
  if (uid > MAX_OCTAL_7 || uid < 0) {
    pax.push(paxRecord('uid', String(uid)));
    uid = 0;
  }
  let gid = fields.gid;
  if (gid > MAX_OCTAL_7 || gid < 0) {
    pax.push(paxRecord('gid', String(gid)));
    gid = 0;
  }
  let mtime = Math.floor(fields.mtime);
  if (mtime < 0 || mtime > MAX_OCTAL_11) {
    pax.push(paxRecord('mtime', String(mtime)));
    mtime = mtime < 0 ? 0 : MAX_OCTAL_11;
  }

  const header = ustarHeader(ustarName, ustarPrefix, TYPEFLAG[fields.type], {
    mode: fields.mode,
    uid,
    gid,
    size: ustarSize,
    mtime,
    linkname: ustarLink,
    devmajor: fields.devmajor ?? 0,
    devminor: fields.devminor ?? 0,
  });
  if (pax.length === 0) return header;

  const paxData = Buffer.from(pax.join(''), 'utf8');
  const base = name.replace(/\/$/, '').split('/').pop() ?? 'entry';
  const paxHeader = ustarHeader(asciiFallback(`PaxHeaders/${base}`, 100), '', 0x78 /* 'x' */, {
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: paxData.length,
    mtime: Math.max(0, Math.min(mtime, MAX_OCTAL_11)),
    linkname: '',
    devmajor: 0,
    devminor: 0,
  });
  const out = Buffer.alloc(BLOCK + padTo512(paxData.length) + BLOCK);
  paxHeader.copy(out, 0);
  paxData.copy(out, BLOCK);
  header.copy(out, out.length - BLOCK);
  return out;
}

/** The end-of-archive marker: two zero records. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

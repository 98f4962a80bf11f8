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
  /** Member name, exact bytes (a string is taken as UTF-8); directories get a trailing '/' here. */
  name: Buffer | string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Content size; only regular files carry data. */
  size: number;
  /** Seconds since the epoch (may be fractional). */
  mtime: number;
  linkname?: Buffer | string;
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
const SLASH = 0x2f;

/** Bytes 0x01..0x7f only: a name ustar can carry as is, and every reader reads the same way. */
function isAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === 0 || c > 0x7f) return false;
  }
  return true;
}

/** Whether bytes are well-formed UTF-8 (PAX values are UTF-8 unless hdrcharset=BINARY says not). */
function isUtf8(b: Buffer): boolean {
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

const EMPTY = Buffer.alloc(0);

function bytesOf(v: Buffer | string | undefined): Buffer {
  if (v === undefined) return EMPTY;
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

/** Rounds a byte count up to whole 512-byte records. */
export function padTo512(n: number): number {
  return (n + BLOCK - 1) & ~(BLOCK - 1);
}

/** `value` as width-1 zero-padded octal digits and a NUL (callers keep it within the field). */
function writeOctal(buf: Buffer, offset: number, width: number, value: number): void {
  let v = Math.floor(value);
  buf[offset + width - 1] = 0;
  for (let i = offset + width - 2; i >= offset; i--) {
    buf[i] = 0x30 + (v % 8);
    v = Math.floor(v / 8);
  }
}

/** Splits a name into ustar prefix (≤155) and name (≤100) at a '/', or null when it cannot. */
function splitUstarName(name: Buffer): { prefix: Buffer; name: Buffer } | null {
  if (name.length <= 100) return { prefix: EMPTY, name };
  // The split must be at a '/' such that the tail fits 100 and the head fits 155.
  for (let i = name.indexOf(SLASH); i !== -1; i = name.indexOf(SLASH, i + 1)) {
    if (i > 155) return null;
    const tail = name.length - i - 1;
    if (tail <= 100 && tail > 0) return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
  }
  return null;
}

/** A PAX record: "<len> <key>=<value>\n" where len counts the whole record including itself. */
export function paxRecordBytes(key: string, value: Buffer): Buffer {
  const bodyLen = 1 + Buffer.byteLength(key) + 1 + value.length + 1;
  const digits = String(bodyLen).length;
  let len = bodyLen + digits;
  if (String(len).length > digits) len = bodyLen + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, 'utf8'), value, Buffer.from('\n')]);
}

export function paxRecord(key: string, value: string): string {
  return paxRecordBytes(key, Buffer.from(value, 'utf8')).toString('utf8');
}

export interface UstarFields {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
}

const USTAR_MAGIC = Buffer.from('ustar\u000000', 'latin1');

/** One ustar header record, written into `into` (512 bytes, overwritten) or a new buffer. */
export function ustarHeader(name: Buffer, prefix: Buffer, typeflag: number, f: UstarFields, into?: Buffer): Buffer {
  const h = into ? into.fill(0, 0, BLOCK) : Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(100, name.length));
  writeOctal(h, 100, 8, f.mode & 0o7777);
  writeOctal(h, 108, 8, f.uid);
  writeOctal(h, 116, 8, f.gid);
  writeOctal(h, 124, 12, f.size);
  writeOctal(h, 136, 12, f.mtime);
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h[156] = typeflag;
  f.linkname.copy(h, 157, 0, Math.min(100, f.linkname.length));
  USTAR_MAGIC.copy(h, 257);
  writeOctal(h, 329, 8, f.devmajor);
  writeOctal(h, 337, 8, f.devminor);
  prefix.copy(h, 345, 0, Math.min(155, prefix.length));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  writeOctal(h, 148, 7, sum);
  h[155] = 0x20;
  return h;
}

/** A stand-in ustar name for members whose real name lives in a PAX record. */
export function asciiFallback(name: Buffer, max: number): Buffer {
  const out = Buffer.from(name.subarray(Math.max(0, name.length - max)));
  for (let i = 0; i < out.length; i++) if (out[i] < 0x20 || out[i] > 0x7e) out[i] = 0x5f; // '_'
  return out;
}

/**
 * Encodes the header record(s) of one member: either one 512-byte ustar header, or a PAX 'x'
 * header, its padded records, then the ustar header. The returned buffer's length is a multiple
 * of 512; the member's data (for files) follows it, padded to 512.
 *
 * Names are archived byte for byte. A name ustar can hold (ASCII, or any bytes in 100) goes in
 * the ustar fields; any other goes in a PAX record, with `hdrcharset=BINARY` when it is not UTF-8
 * so that readers take the bytes as they are.
 *
 * With `scratch` (512 bytes), a member that needs no PAX header is encoded into it and `scratch`
 * itself is returned: valid until the next call, which spares the packer an allocation per file.
 */
export function encodeHeader(fields: TarHeaderFields, scratch?: Buffer): Buffer {
  let name: Buffer = bytesOf(fields.name);
  if (fields.type === 'directory' && name[name.length - 1] !== SLASH) name = Buffer.concat([name, Buffer.from('/')]);
  const linkname = bytesOf(fields.linkname);
  const size = fields.type === 'file' ? fields.size : 0;
  const pax: Buffer[] = [];
  let ustarName = name;
  let ustarPrefix: Buffer = EMPTY;
  const split = isAscii(name) ? splitUstarName(name) : name.length <= 100 && !isUtf8(name) ? { prefix: ustarPrefix, name } : null;
  if (split) {
    ustarName = split.name;
    ustarPrefix = split.prefix;
  } else {
    pax.push(paxRecordBytes('path', name));
    ustarName = asciiFallback(name, 100);
  }
  let ustarLink = linkname;
  if (!isAscii(linkname) || linkname.length > 100) {
    pax.push(paxRecordBytes('linkpath', linkname));
    ustarLink = asciiFallback(linkname, 100);
  }
  // Byte names that are not UTF-8 in a PAX record: say so first, so readers keep the bytes.
  if (pax.length > 0 && (!isUtf8(name) || !isUtf8(linkname))) pax.unshift(paxRecordBytes('hdrcharset', Buffer.from('BINARY')));
  const numbers = paxNumbers(pax, size, fields.uid, fields.gid, fields.mtime);
  const header = ustarHeader(ustarName, ustarPrefix, TYPEFLAG[fields.type], {
    mode: fields.mode,
    ...numbers,
    linkname: ustarLink,
    devmajor: fields.devmajor ?? 0,
    devminor: fields.devminor ?? 0,
  }, scratch);
  return withPax(pax, name, numbers.mtime, header);
}

/**
 * Values that do not fit their octal ustar field go in PAX records (pushed onto `pax`); returns
 * what the ustar fields then hold.
 */
export function paxNumbers(pax: Buffer[], size: number, uidIn: number, gidIn: number, mtimeIn: number): { size: number; uid: number; gid: number; mtime: number } {
  const text = (k: string, v: number) => pax.push(paxRecordBytes(k, Buffer.from(String(v))));
  let ustarSize = size;
  if (size > MAX_OCTAL_11) {
    text('size', size);
    ustarSize = 0;
  }
  let uid = uidIn;
  if (uid > MAX_OCTAL_7 || uid < 0) {
    text('uid', uid);
    uid = 0;
  }
  let gid = gidIn;
  if (gid > MAX_OCTAL_7 || gid < 0) {
    text('gid', gid);
    gid = 0;
  }
  let mtime = Math.floor(mtimeIn);
  if (mtime < 0 || mtime > MAX_OCTAL_11) {
    text('mtime', mtime);
    mtime = mtime < 0 ? 0 : MAX_OCTAL_11;
  }
  return { size: ustarSize, uid, gid, mtime };
}

/** The PAX 'x' header and records (if any) in front of a member's ustar header. */
export function withPax(pax: Buffer[], name: Buffer, mtime: number, header: Buffer): Buffer {
  if (pax.length === 0) return header;
  const paxData = Buffer.concat(pax);
  const trimmed = name[name.length - 1] === SLASH ? name.subarray(0, name.length - 1) : name;
  const base = trimmed.subarray(trimmed.lastIndexOf(SLASH) + 1);
  const paxHeader = ustarHeader(asciiFallback(Buffer.concat([Buffer.from('PaxHeaders/'), base]), 100), Buffer.alloc(0), 0x78 /* 'x' */, {
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: paxData.length,
    mtime: Math.max(0, Math.min(mtime, MAX_OCTAL_11)),
    linkname: Buffer.alloc(0),
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

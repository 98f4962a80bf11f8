import type { Readable } from 'node:stream';
import { NbackupError } from '../errors.js';

/**
 * A streaming reader of POSIX tar (ustar + PAX, GNU long names): one member at a time, names and
 * link targets as the exact bytes archived (PAX values are bytes here, so names that are not UTF-8
 * survive), each member's offset in the tar stream, and its data read (or skipped) in order.
 * Nothing is buffered beyond one read from the source plus one header.
 */
export type MemberType = 'file' | 'hardlink' | 'symlink' | 'char-device' | 'block-device' | 'directory' | 'fifo';

export interface TarMember {
  /** Tar-stream offset of this member's first header record (its PAX header, when it has one). */
  offset: number;
  name: Buffer;
  linkname: Buffer;
  type: MemberType;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, with a fraction when PAX carried one. */
  mtime: number;
  /** Bytes of data that follow the header (for a sparse file, its data area). */
  size: number;
  devmajor: number;
  devminor: number;
  /** PAX records of this member (global ones under them). */
  pax: Map<string, Buffer>;
}

const TYPES: Record<string, MemberType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char-device', '4': 'block-device', '5': 'directory', '6': 'fifo',
};
/** Largest PAX or GNU long-name record set accepted (GNU tar's own limit is about this). */
const MAX_META = 1 << 20;

class ByteSource {
  private chunk: Buffer = Buffer.alloc(0);
  private pos = 0;
  private readonly it: AsyncIterator<Buffer>;
  offset = 0;

  constructor(input: Readable) {
    this.it = (input as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  /** Up to `max` bytes (a view), or null at the end of the input. */
  async some(max: number): Promise<Buffer | null> {
    while (this.pos >= this.chunk.length) {
      const next = await this.it.next();
      if (next.done) return null;
      this.chunk = next.value;
      this.pos = 0;
    }
    const n = Math.min(max, this.chunk.length - this.pos);
    const out = this.chunk.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.offset += n;
    return out;
  }

  /** Exactly `n` bytes, or null when the input ends first (a copy when they span reads). */
  async exact(n: number): Promise<Buffer | null> {
    const first = await this.some(n);
    if (first === null || first.length === n) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const b = await this.some(n - got);
      if (b === null) return null;
      parts.push(b);
      got += b.length;
    }
    return Buffer.concat(parts, n);
  }

  async skip(n: number): Promise<void> {
    for (let left = n; left > 0; ) {
      const b = await this.some(left);
      if (b === null || b.length === 0) throw truncated();
      left -= b.length;
    }
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

function truncated(): NbackupError {
  return new NbackupError('checksum', 'the tar stream ends inside a member (truncated archive)');
}

function cstring(b: Buffer, at: number, len: number): Buffer {
  const field = b.subarray(at, at + len);
  const nul = field.indexOf(0);
  return Buffer.from(nul < 0 ? field : field.subarray(0, nul));
}

function numeric(b: Buffer, at: number, len: number, what: string): number {
  if (b[at] & 0x80) {
    // GNU base-256: big-endian two's complement in the remaining bytes.
    let v = 0;
    for (let i = at + 1; i < at + len; i++) v = v * 256 + b[i];
    if (!Number.isSafeInteger(v)) throw new NbackupError('checksum', `tar header: ${what} is too large`);
    return v;
  }
  const text = b.toString('latin1', at, at + len).replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new NbackupError('checksum', `tar header: ${what} is not an octal number (${JSON.stringify(text)})`);
  return parseInt(text, 8);
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  return sum === numeric(h, 148, 8, 'checksum');
}

/** PAX records `<len> <key>=<value>\n`, values kept as bytes. */
export function parsePax(buf: Buffer, into: Map<string, Buffer>): void {
  let at = 0;
  while (at < buf.length) {
    const sp = buf.indexOf(0x20, at);
    if (sp < 0) break;
    const len = Number(buf.toString('latin1', at, sp));
    if (!Number.isSafeInteger(len) || len <= sp - at + 1 || at + len > buf.length) throw new NbackupError('checksum', 'tar: malformed PAX record');
    const rec = buf.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new NbackupError('checksum', 'tar: PAX record without "="');
    const key = rec.toString('utf8', 0, eq);
    const value = Buffer.from(rec.subarray(eq + 1));
    if (value.length === 0) into.delete(key);
    else into.set(key, value);
    at += len;
  }
}

/**
 * A PAX number: size, uid and gid must be safe whole numbers (a size of 0.5 would have the reader
 * ask for half a byte forever); mtime may carry a fraction. Anything else is a corrupt archive.
 */
function paxNumber(pax: Map<string, Buffer>, key: 'size' | 'uid' | 'gid' | 'mtime', fallback: number): number {
  const v = pax.get(key);
  if (!v) return fallback;
  const text = v.toString('latin1');
  const n = Number(text);
  const form = key === 'mtime' ? /^\d+(\.\d+)?$/ : /^\d+$/;
  if (!form.test(text) || !Number.isFinite(n) || (key !== 'mtime' && !Number.isSafeInteger(n))) {
    const expected = key === 'mtime' ? 'a number of seconds' : `a whole number up to ${Number.MAX_SAFE_INTEGER}`;
    throw new NbackupError('checksum', `tar: PAX ${key} ${JSON.stringify(text)} is not ${expected} (corrupt archive)`);
  }
  return n;
}

export class TarReader {
  private readonly src: ByteSource;
  private dataLeft = 0;
  private padLeft = 0;
  private ended = false;

  constructor(input: Readable) {
    this.src = new ByteSource(input);
  }

  /** The next member (after skipping what is left of the previous one's data), or null at the end. */
  async next(): Promise<TarMember | null> {
    await this.src.skip(this.dataLeft + this.padLeft);
    this.dataLeft = this.padLeft = 0;
    if (this.ended) return null;
    const global = new Map<string, Buffer>();
    const pax = new Map<string, Buffer>();
    let longName: Buffer | null = null;
    let longLink: Buffer | null = null;
    let offset = -1;
    for (;;) {
      const at = this.src.offset;
      const h = await this.src.exact(512);
      if (h === null) {
        // Some writers stop without the end-of-archive records; that is an end, not a cut member.
        if (offset < 0) return this.end();
        throw truncated();
      }
      if (h.every((x) => x === 0)) {
        if (offset >= 0) throw new NbackupError('checksum', 'tar: an end-of-archive record follows a PAX header');
        return this.end();
      }
      if (!checksumOk(h)) throw new NbackupError('checksum', `tar: bad header checksum at offset ${at}`);
      if (offset < 0) offset = at;
      const flag = String.fromCharCode(h[156]);
      const size = numeric(h, 124, 12, 'size');
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_META) throw new NbackupError('checksum', `tar: a ${size}-byte extended header is too large`);
        const body = await this.src.exact(size);
        if (body === null) throw truncated();
        await this.src.skip(pad(size));
        if (flag === 'x') parsePax(body, pax);
        else if (flag === 'g') parsePax(body, global);
        else if (flag === 'L') longName = cstring(body, 0, body.length);
        else longLink = cstring(body, 0, body.length);
        continue;
      }
      const type = TYPES[flag];
      if (!type) throw new NbackupError('checksum', `tar: member type ${JSON.stringify(flag)} at offset ${at} is not supported`);
      const merged = new Map([...global, ...pax]);
      const ustar = h.toString('latin1', 257, 262) === 'ustar';
      const prefix = ustar ? cstring(h, 345, 155) : Buffer.alloc(0);
      let name = merged.get('path') ?? longName ?? (prefix.length ? Buffer.concat([prefix, Buffer.from('/'), cstring(h, 0, 100)]) : cstring(h, 0, 100));
      const linkname = merged.get('linkpath') ?? longLink ?? cstring(h, 157, 100);
      if (type === 'directory' && name.length > 1 && name[name.length - 1] === 0x2f) name = name.subarray(0, name.length - 1);
      const dataSize = paxNumber(merged, 'size', size);
      const member: TarMember = {
        offset,
        name,
        linkname,
        type,
        mode: numeric(h, 100, 8, 'mode') & 0o7777,
        uid: paxNumber(merged, 'uid', numeric(h, 108, 8, 'uid')),
        gid: paxNumber(merged, 'gid', numeric(h, 116, 8, 'gid')),
        mtime: paxNumber(merged, 'mtime', numeric(h, 136, 12, 'mtime')),
        size: type === 'file' ? dataSize : 0,
        devmajor: ustar ? numeric(h, 329, 8, 'devmajor') : 0,
        devminor: ustar ? numeric(h, 337, 8, 'devminor') : 0,
        pax: merged,
      };
      // Links and the like carry no data whatever their size field says (but it is skipped).
      this.dataLeft = type === 'file' ? dataSize : size;
      this.padLeft = pad(this.dataLeft);
      return member;
    }
  }

  /** Up to `max` bytes of the current member's data, or null when it has no more. */
  async data(max = 1 << 20): Promise<Buffer | null> {
    if (this.dataLeft === 0) return null;
    const b = await this.src.some(Math.min(max, this.dataLeft));
    // Nothing read while data remains would repeat forever: take it as the end of the input.
    if (b === null || b.length === 0) throw truncated();
    this.dataLeft -= b.length;
    return b;
  }

  /** Tar-stream offset of the next byte the reader would take. */
  get offset(): number {
    return this.src.offset;
  }

  /** Reads whatever the input still holds after the end-of-archive records (so a hash covers it all). */
  async drain(): Promise<void> {
    while ((await this.src.some(1 << 20)) !== null);
  }

  /** Stops reading: the source is released (a partial restore needs no more). */
  async close(): Promise<void> {
    this.ended = true;
    await this.src.close();
  }

  private end(): null {
    this.ended = true;
    return null;
  }
}

function pad(n: number): number {
  return (512 - (n % 512)) % 512;
}

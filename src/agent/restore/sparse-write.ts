import fs from 'node:fs';
import { NbackupError } from '../../errors.js';
import type { TarReader } from '../../archive/tar-reader.js';

/** Most regions a sparse map may list (each is two decimal lines). */
const MAX_REGIONS = 1 << 20;

/**
 * Writes a GNU sparse 1.0 member's data area into `fd`: the map (decimal text: the region count,
 * then offset and length of each, padded to 512 bytes), then each region's data at its offset;
 * the file is cut to `realSize`, so the holes stay holes. Returns the data bytes written.
 */
export async function writeSparse(fd: number, reader: TarReader, realSize: number): Promise<number> {
  const numbers: number[] = [];
  let text = '';
  let consumed = 0;
  let leftover: Buffer | null = null;
  let want = 1;
  while (numbers.length < want) {
    const b = await reader.data(4096);
    if (b === null) throw new NbackupError('checksum', 'sparse map cut short');
    let i = 0;
    for (; i < b.length && numbers.length < want; i++) {
      const c = b[i];
      if (c === 0x0a) {
        if (!/^\d{1,16}$/.test(text)) throw new NbackupError('checksum', `sparse map: ${JSON.stringify(text.slice(0, 20))} is not a number`);
        numbers.push(Number(text));
        text = '';
        if (numbers.length === 1) {
          if (numbers[0] > MAX_REGIONS) throw new NbackupError('checksum', `sparse map lists ${numbers[0]} regions`);
          want = 1 + 2 * numbers[0];
        }
      } else {
        text += String.fromCharCode(c);
        if (text.length > 20) throw new NbackupError('checksum', 'sparse map: a number is too long');
      }
    }
    consumed += i;
    if (i < b.length) leftover = b.subarray(i);
  }
  // The map is padded to 512 bytes; the data of the regions follows.
  let skip = (512 - (consumed % 512)) % 512;
  const take = async (): Promise<Buffer | null> => {
    for (;;) {
      let b = leftover ?? (await reader.data());
      leftover = null;
      if (b === null) return null;
      if (skip > 0) {
        const n = Math.min(skip, b.length);
        skip -= n;
        b = b.subarray(n);
        if (b.length === 0) continue;
      }
      return b;
    }
  };
  let written = 0;
  for (let r = 0; r < numbers[0]; r++) {
    const offset = numbers[1 + 2 * r];
    const length = numbers[2 + 2 * r];
    if (offset + length > realSize) throw new NbackupError('checksum', `sparse map: region ${offset}+${length} lies past the file's size ${realSize}`);
    for (let done = 0; done < length; ) {
      const b = await take();
      if (b === null) throw new NbackupError('checksum', 'sparse data cut short');
      const part = b.subarray(0, length - done);
      for (let off = 0; off < part.length; ) off += fs.writeSync(fd, part, off, part.length - off, offset + done + off);
      done += part.length;
      if (part.length < b.length) leftover = b.subarray(part.length);
    }
    written += length;
  }
  fs.ftruncateSync(fd, realSize);
  return written;
}

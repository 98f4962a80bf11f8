import type { Extent } from './file-map.js';
import { asciiFallback, padTo512, paxNumbers, paxRecordBytes, ustarHeader, withPax } from './tar-header.js';

/**
 * A sparse file as GNU tar's PAX sparse format 1.0, which GNU tar restores with its holes:
 *
 *   PAX records  GNU.sparse.major=1, GNU.sparse.minor=0, GNU.sparse.name=<name>,
 *                GNU.sparse.realsize=<size>
 *   ustar header a stand-in name (GNUSparseFile.0/<base>), typeflag '0', size = the data area
 *   data area    the map as decimal text ("<count>\n" then "<offset>\n<length>\n" per region),
 *                padded to 512 bytes, then the data of each region in order
 *
 * A file that ends in a hole gets a last (size, 0) region so that the restore has the full size.
 */
export interface SparseMember {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  realSize: number;
}

export interface SparseLayout {
  /** Header records and the map block(s): write these, then the regions' data. */
  head: Buffer;
  /** Regions as the map lists them (with the trailing empty one, if any). */
  regions: Extent[];
  /** Bytes of the data area: map blocks plus the regions' data. Pad the member to 512 after it. */
  dataAreaSize: number;
}

export function encodeSparse(m: SparseMember, extents: readonly Extent[]): SparseLayout {
  const regions = [...extents];
  const last = regions[regions.length - 1];
  if (!last || last.offset + last.length < m.realSize) regions.push({ offset: m.realSize, length: 0 });
  const mapText = [String(regions.length), ...regions.flatMap((r) => [String(r.offset), String(r.length)])].join('\n') + '\n';
  const map = Buffer.alloc(padTo512(Buffer.byteLength(mapText)));
  map.write(mapText, 'ascii');
  const dataAreaSize = map.length + regions.reduce((n, r) => n + r.length, 0);

  const pax: Buffer[] = [];
  if (!Buffer.from(m.name.toString('utf8'), 'utf8').equals(m.name)) pax.push(paxRecordBytes('hdrcharset', Buffer.from('BINARY')));
  pax.push(paxRecordBytes('GNU.sparse.major', Buffer.from('1')));
  pax.push(paxRecordBytes('GNU.sparse.minor', Buffer.from('0')));
  pax.push(paxRecordBytes('GNU.sparse.name', m.name));
  pax.push(paxRecordBytes('GNU.sparse.realsize', Buffer.from(String(m.realSize))));
  const numbers = paxNumbers(pax, dataAreaSize, m.uid, m.gid, m.mtime);
  const base = m.name.subarray(m.name.lastIndexOf(0x2f) + 1);
  const standIn = asciiFallback(Buffer.concat([Buffer.from('GNUSparseFile.0/'), base]), 100);
  const header = ustarHeader(standIn, Buffer.alloc(0), 0x30, { mode: m.mode, ...numbers, linkname: Buffer.alloc(0), devmajor: 0, devminor: 0 });
  return { head: Buffer.concat([withPax(pax, m.name, numbers.mtime, header), map]), regions, dataAreaSize };
}



import fs from 'node:fs';
import { errnoCode, errorMessage } from '../../errors.js';
import { sparseMap, type Extent } from './file-map.js';
import { describeEntry, runEntry, type ScanEntry, type ScanWarning } from './scanner.js';
import { LINE_BYTES, RUN, nameAt, runPacker, type FileRun } from './file-run.js';
import { END_OF_ARCHIVE, encodeHeader, padTo512, type TarHeaderFields } from './tar-header.js';
import { encodeSparse } from './tar-sparse.js';
import { smallFileReader } from './small-file.js';
import type { IndexMember } from '../../archive/index-format.js';

/**
 * Turns scanned entries into a tar stream cut in fixed-size blocks. File data is read straight into
 * the block that goes to the compressor, so each byte is copied once (kernel → block). A full block
 * is handed to `sink`, whose promise is the backpressure: the packer waits until it is taken.
 *
 * Files are opened O_NOFOLLOW|O_NONBLOCK and re-checked with fstat, so a file swapped for a symlink
 * or FIFO between scan and read is never followed or blocked on. A file that shrinks while read is
 * padded with zeros and one that grows is cut at the size in its header — either way the archive
 * stays valid and a warning names the file. A file with holes is stored sparse (tar-sparse.ts):
 * only its data regions are read and archived.
 */
export interface BlockSink {
  /** Takes ownership of `block` (a view of `length` bytes); resolves when the packer may go on. */
  push(block: Buffer): Promise<void> | void;
}

export interface BlockSource {
  /** A buffer of at least `blockSize` bytes to fill; recycled blocks come back via `recycle`. */
  take(): Buffer;
}

export interface PackStats {
  entries: number;
  files: number;
  bytesRead: number;
  tarBytes: number;
  warnings: number;
}

const SLASH = Buffer.from('/');
const O_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

export class TarPacker {
  private block: Buffer;
  private pos = 0;
  private readonly hardLinks = new Map<string, Buffer>();
  /** Where headers are encoded before they are copied into the block. */
  private readonly scratch = Buffer.alloc(512);
  private readonly readSmall = smallFileReader();
  private readonly packRun = runPacker();
  private readonly lines = this.packRun ? Buffer.allocUnsafe(LINE_BYTES) : Buffer.alloc(0);
  readonly stats: PackStats = { entries: 0, files: 0, bytesRead: 0, tarBytes: 0, warnings: 0 };

  constructor(
    private readonly blockSize: number,
    private readonly blocks: BlockSource,
    private readonly sink: BlockSink,
    private readonly onWarning: (w: ScanWarning) => void,
    /** Hears each member as its first header record is written (the archive's index). */
    private readonly onMember?: (m: IndexMember) => void,
    /** Hears the index lines of the members a run packed natively (with onMember, same order). */
    private readonly onLines?: (text: Buffer, members: number) => void,
  ) {
    this.block = blocks.take();
  }

  /** Whether runs of files (scanWithRuns) are packed natively; without, give entries one by one. */
  get packsRuns(): boolean {
    return this.packRun !== null;
  }

  /**
   * Archives a run of one directory's files: natively while they are small plain files, the
   * general way for any other, in the run's order.
   */
  async addRun(run: FileRun): Promise<void> {
    const prefix = run.dirName.length === 0 ? run.dirName : Buffer.concat([run.dirName, SLASH]);
    let native = this.packRun !== null;
    let at = 0;
    while (at < run.names.length) {
      if (!native) {
        const { base, next } = nameAt(run, at);
        await this.addFile(runEntry(run, base));
        at = next;
        continue;
      }
      const r = this.packRun!(run, prefix, at, this.block, this.pos, this.stats.tarBytes, this.lines);
      this.pos = r.pos;
      this.stats.entries += r.files;
      this.stats.files += r.files;
      this.stats.bytesRead += r.bytesRead;
      if (r.lineBytes > 0) this.onLines?.(this.lines.subarray(0, r.lineBytes), r.files);
      if (r.status === RUN.done) return;
      at = r.at;
      // Without its directory, the rest of the run goes one by one.
      if (r.status === RUN.noDir) native = false;
      if (r.status !== RUN.take && r.status !== RUN.changed) continue;
      const { base, next } = nameAt(run, at);
      const entry = runEntry(run, base);
      if (r.status === RUN.changed) this.warnChanged(entry, r.size, r.sizeAfter);
      else if (r.fd >= 0) await this.addOpenFile(entry, r.fd);
      else await this.addFile(entry);
      at = next;
    }
  }

  /** Archives one entry; a promise only when the packer must wait (a block handed over). */
  add(entry: ScanEntry): Promise<void> | void {
    // A regular file's metadata comes from fstat once it is open (addFile).
    return entry.type === 'file' ? this.addFile(entry) : this.addOther(entry);
  }

  private async addOther(entry: ScanEntry): Promise<void> {
    const st = entry.stats ?? fs.lstatSync(entry.access);
    const base = { name: entry.name, mode: st.mode, uid: st.uid, gid: st.gid, mtime: st.mtimeMs / 1000 };
    if (entry.type !== 'directory' && (await this.hardLink(base, st))) return;
    switch (entry.type) {
      case 'symlink': {
        let target: Buffer;
        try {
          target = fs.readlinkSync(entry.access, { encoding: 'buffer' });
        } catch (err) {
          this.warn(entry, `symlink could not be read: ${errorMessage(err)}`);
          return;
        }
        this.record({ ...base, type: 'symlink', size: 0, link: target });
        await this.header({ ...base, type: 'symlink', size: 0, linkname: target });
        break;
      }
      case 'char-device':
      case 'block-device':
        this.record({ ...base, type: entry.type, size: 0 });
        await this.header({ ...base, type: entry.type, size: 0, devmajor: major(st.rdev), devminor: minor(st.rdev) });
        break;
      default:
        this.record({ ...base, type: entry.type, size: 0 });
        await this.header({ ...base, type: entry.type, size: 0 });
    }
    if (entry.type !== 'directory' && st.nlink > 1) this.hardLinks.set(`${st.dev}:${st.ino}`, entry.name);
  }

  /** Writes the end-of-archive records and hands over the last, partial block. */
  async finish(): Promise<void> {
    await this.write(END_OF_ARCHIVE);
    if (this.pos > 0) {
      const last = this.block.subarray(0, this.pos);
      this.stats.tarBytes += this.pos;
      this.pos = 0;
      await this.sink.push(last);
    }
  }

  /** Tells the index about the member whose first header record is written next. */
  private record(m: Omit<IndexMember, 'offset'>): void {
    this.onMember?.({ offset: this.stats.tarBytes + this.pos, type: m.type, size: m.size, mode: m.mode & 0o7777, mtime: m.mtime, name: m.name, link: m.link });
  }

  private warn(entry: ScanEntry, message: string): void {
    this.stats.warnings++;
    this.onWarning({ path: describeEntry(entry), message });
  }

  private header(fields: TarHeaderFields): Promise<void> | void {
    this.stats.entries++;
    return this.write(encodeHeader(fields, this.scratch));
  }

  /**
   * A later name of an inode already archived becomes a hard-link member; true when it did. Only a
   * member that made it into the archive is remembered as a target (by the callers).
   */
  private async hardLink(base: Omit<TarHeaderFields, 'type' | 'size'> & { name: Buffer }, st: fs.Stats): Promise<boolean> {
    if (st.nlink <= 1) return false;
    const first = this.hardLinks.get(`${st.dev}:${st.ino}`);
    if (first === undefined) return false;
    this.record({ ...base, type: 'hardlink', size: 0, link: first });
    await this.header({ ...base, type: 'hardlink', size: 0, linkname: first });
    return true;
  }

  /**
   * A small file is read whole, header room left in front of it, by one native call; anything else
   * (or everything, without the addon) goes the general way, `addOpenFile`.
   */
  private addFile(entry: ScanEntry): Promise<void> | void {
    const room = this.blockSize - this.pos - 512;
    if (this.readSmall === null || room <= 0) return this.openAndAdd(entry);
    const out = this.readSmall(entry.access, this.block, this.pos + 512, room);
    if (out === 'open-failed') return this.openAndAdd(entry);
    if ('fd' in out) return this.addOpenFile(entry, out.fd);
    const r = out.read;
    this.record({ name: entry.name, type: 'file', mode: r.mode, mtime: r.mtime, size: r.size });
    const header = encodeHeader({ name: entry.name, type: 'file', mode: r.mode, uid: r.uid, gid: r.gid, mtime: r.mtime, size: r.size }, this.scratch);
    this.stats.entries++;
    this.stats.files++;
    this.stats.bytesRead += r.size;
    if (r.changed) this.warnChanged(entry, r.size, r.sizeAfter);
    const padded = padTo512(r.size);
    if (header.length === 512) {
      header.copy(this.block, this.pos);
      this.pos += 512 + padded;
      return;
    }
    // A name or number that needs PAX records: the data moves behind the longer header.
    const data = Buffer.from(this.block.subarray(this.pos + 512, this.pos + 512 + padded));
    return this.writeAll(header, data);
  }

  private async writeAll(...parts: Buffer[]): Promise<void> {
    for (const part of parts) await this.write(part);
  }

  private warnChanged(entry: ScanEntry, size: number, sizeAfter: number): void {
    this.warn(entry, `changed while being read (size ${size} → ${sizeAfter}); archived as first seen`);
  }

  private openAndAdd(entry: ScanEntry): Promise<void> | void {
    let fd: number;
    try {
      fd = fs.openSync(entry.access, O_FLAGS);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') this.warn(entry, 'vanished before it could be read; skipped');
      else if (code === 'ELOOP') this.warn(entry, 'was replaced by a symlink while scanning; skipped');
      else this.warn(entry, `cannot be opened: ${errorMessage(err)}; skipped`);
      return;
    }
    return this.addOpenFile(entry, fd);
  }

  /** Archives the open regular file `fd` (any size, holes, links), and closes it. */
  private async addOpenFile(entry: ScanEntry, fd: number): Promise<void> {
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) {
        this.warn(entry, 'is no longer a regular file; skipped');
        return;
      }
      const size = st.size;
      const member = { name: entry.name, mode: st.mode, uid: st.uid, gid: st.gid, mtime: st.mtimeMs / 1000 };
      if (await this.hardLink(member, st)) return;
      this.record({ ...member, type: 'file', size });
      const map = sparseMap(fd, st);
      let regions: Extent[] = [{ offset: 0, length: size }];
      let dataSize = size;
      if (map) {
        const sparse = encodeSparse({ ...member, realSize: size }, map);
        this.stats.entries++;
        await this.write(sparse.head);
        regions = sparse.regions;
        dataSize = sparse.dataAreaSize;
      } else {
        await this.header({ ...member, type: 'file', size });
      }
      this.stats.files++;
      for (const r of regions) {
        const read = await this.copyRange(entry, fd, r.offset, r.length);
        this.stats.bytesRead += read;
        if (read < r.length) {
          this.warn(entry, `shrank while being read (${size} bytes expected, data ended at ${r.offset + read}); padded with zeros`);
          await this.zeros(r.length - read);
        }
      }
      await this.zeros(padTo512(dataSize) - dataSize);
      const after = fs.fstatSync(fd);
      if (after.size !== size || after.mtimeMs !== st.mtimeMs) {
        this.warnChanged(entry, size, after.size);
      }
      if (st.nlink > 1) this.hardLinks.set(`${st.dev}:${st.ino}`, entry.name);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Reads `length` bytes of `fd` from `offset` straight into the blocks; returns how many there
   * were (fewer when the file shrank, or a read failed: a warning then says so).
   */
  private async copyRange(entry: ScanEntry, fd: number, offset: number, length: number): Promise<number> {
    let done = 0;
    while (done < length) {
      if (this.pos === this.blockSize) await this.flush();
      const want = Math.min(length - done, this.blockSize - this.pos);
      let n: number;
      try {
        n = fs.readSync(fd, this.block, this.pos, want, offset + done);
      } catch (err) {
        this.warn(entry, `read failed at byte ${offset + done}: ${errorMessage(err)}; the rest is filled with zeros`);
        return done;
      }
      if (n === 0) return done;
      this.pos += n;
      done += n;
    }
    return done;
  }

  private async flush(): Promise<void> {
    const full = this.block;
    this.block = this.blocks.take();
    this.pos = 0;
    this.stats.tarBytes += full.length;
    await this.sink.push(full);
  }

  /** Copies `src` into the block; a promise only when a full block must be handed over first. */
  private write(src: Buffer): Promise<void> | void {
    if (src.length <= this.blockSize - this.pos) {
      src.copy(this.block, this.pos);
      this.pos += src.length;
      return;
    }
    return this.writeAcross(src);
  }

  private async writeAcross(src: Buffer): Promise<void> {
    let off = 0;
    while (off < src.length) {
      if (this.pos === this.blockSize) await this.flush();
      const n = Math.min(src.length - off, this.blockSize - this.pos);
      src.copy(this.block, this.pos, off, off + n);
      this.pos += n;
      off += n;
    }
  }

  private async zeros(count: number): Promise<void> {
    while (count > 0) {
      if (this.pos === this.blockSize) await this.flush();
      const n = Math.min(count, this.blockSize - this.pos);
      this.block.fill(0, this.pos, this.pos + n);
      this.pos += n;
      count -= n;
    }
  }
}

// Linux's dev_t encoding (glibc gnu_dev_major / gnu_dev_minor).
function major(dev: number): number {
  return Number(((BigInt(dev) >> 8n) & 0xfffn) | ((BigInt(dev) >> 32n) & ~0xfffn));
}
function minor(dev: number): number {
  return Number((BigInt(dev) & 0xffn) | ((BigInt(dev) >> 12n) & ~0xffn));
}


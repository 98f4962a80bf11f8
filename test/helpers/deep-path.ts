/**
 * Reaching paths longer than PATH_MAX (4096 bytes) from the tests: a deep directory is opened and
 * what lies below it is reached as `/proc/self/fd/<fd>/…`, so no system call sees a long path.
 * Paths are bytes (Buffers): names need not be UTF-8.
 */
import fs from 'node:fs';

const SHORT_ENOUGH = 3000;
const O_DIR = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY;

export class DeepPaths {
  private readonly dirs = new Map<string, Buffer>();
  private readonly fds: number[] = [];

  /** A path to `abs` that the kernel accepts, however long `abs` is. */
  reach(abs: Buffer): Buffer {
    if (abs.length <= SHORT_ENOUGH) return abs;
    const slash = abs.lastIndexOf(0x2f);
    return Buffer.concat([this.dir(abs.subarray(0, slash)), abs.subarray(slash)]);
  }

  /** Closes every directory opened on the way. */
  close(): void {
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
    this.dirs.clear();
  }

  private dir(abs: Buffer): Buffer {
    if (abs.length <= SHORT_ENOUGH) return abs;
    const key = abs.toString('latin1');
    const known = this.dirs.get(key);
    if (known) return known;
    const slash = abs.lastIndexOf(0x2f);
    let access = Buffer.concat([this.dir(abs.subarray(0, slash)), abs.subarray(slash)]);
    if (access.length > SHORT_ENOUGH) {
      const fd = fs.openSync(access, O_DIR);
      this.fds.push(fd);
      access = Buffer.from(`/proc/self/fd/${fd}`);
    }
    this.dirs.set(key, access);
    return access;
  }
}

/** A byte path for messages: UTF-8 where it is, \xNN elsewhere. */
export function showPath(bytes: Buffer): string {
  let out = '';
  const text = bytes.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(bytes)) return text;
  for (const c of bytes) out += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return out;
}

import fs from 'node:fs';
import crypto from 'node:crypto';
import { NbackupError } from '../errors.js';

/**
 * Positional file I/O on descriptors, looping over short reads and writes, for the temporary,
 * staging and journal files of sessions; and the folder fsync that makes a new name durable.
 */

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function writeAll(fd: number, data: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(fd, data, off, data.length - off, position + off, (err, written) => (err ? reject(err) : resolve(written))),
    );
    off += n;
  }
}

export async function readAll(fd: number, into: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < into.length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.read(fd, into, off, into.length - off, position + off, (err, read) => (err ? reject(err) : resolve(read))),
    );
    if (n === 0) throw new NbackupError('storage', `staging file ended early at ${position + off}`);
    off += n;
  }
}

/** writev at an explicit position, looping over short writes. */
export async function writevAll(fd: number, bufs: Buffer[], position: number): Promise<void> {
  let pending = bufs;
  let pos = position;
  while (pending.length > 0) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.writev(fd, pending, pos, (err, written) => (err ? reject(err) : resolve(written))),
    );
    pos += n;
    let skip = n;
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      rest.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
    pending = rest;
  }
}

/** SHA-256 of the first `length` bytes of `fd`, read once in 1 MiB pieces (re-adopting a session). */
export async function hashPrefix(fd: number, length: number): Promise<crypto.Hash> {
  const hash = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  for (let at = 0; at < length; ) {
    const n = Math.min(buf.length, length - at);
    await readAll(fd, buf.subarray(0, n), at);
    hash.update(buf.subarray(0, n));
    at += n;
  }
  return hash;
}

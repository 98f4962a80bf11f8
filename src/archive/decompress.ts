import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import type { ArchiveFormat } from '../config/index.js';
import { NbackupError } from '../errors.js';
import { addonProblem, loadAddon } from '../native/addons.js';
import { NATIVE_PACKAGES } from '../agent/pipeline/codecs.js';

interface ZstdAddon {
  zstdFrame(buf: Buffer): { compressed: number; content: number } | null;
  zstdDecompress(frame: Buffer, output: Buffer, cb: (err: Error | null, n: number) => void): void;
}

/** Largest decompressed frame accepted: the agent writes 1 MiB blocks; a hostile frame claims more. */
const MAX_FRAME_CONTENT = 64 * 1024 * 1024;
/** Most compressed bytes buffered while waiting for the end of a frame. */
const MAX_FRAME_BYTES = 80 * 1024 * 1024;

/** The archive's tar stream from its compressed bytes: gzip (node:zlib, any number of members) or zstd. */
export function decompressor(format: ArchiveFormat): Transform {
  if (format === 'gzip') return zlib.createGunzip({ chunkSize: 256 * 1024 });
  const addon = loadAddon<ZstdAddon>('nbackup_codec');
  if (!addon) {
    throw new NbackupError('config', `restoring a .tar.zst needs the native codec addon (${addonProblem('nbackup_codec')}); install ${NATIVE_PACKAGES}, then npm ci — or use --stdout | tar --zstd -x`);
  }
  return new ZstdFrames(addon);
}

/**
 * zstd, one whole frame at a time on the thread pool: bytes are gathered until the frame at the
 * front is complete, which is then decompressed into a buffer of the size its header declares.
 */
class ZstdFrames extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly addon: ZstdAddon) {
    super({ readableHighWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.drainFrames().then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    this.drainFrames().then(() => {
      if (this.pendingBytes > 0) done(new NbackupError('checksum', `the zstd stream ends inside a frame (${this.pendingBytes} bytes left)`));
      else done();
    }, done);
  }

  private async drainFrames(): Promise<void> {
    for (;;) {
      if (this.pendingBytes === 0) return;
      const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [buf];
      let info: { compressed: number; content: number } | null;
      try {
        info = this.addon.zstdFrame(buf);
      } catch (err) {
        throw new NbackupError('checksum', `corrupt zstd data: ${(err as Error).message}`);
      }
      if (info === null) {
        if (this.pendingBytes > MAX_FRAME_BYTES) throw new NbackupError('checksum', `a zstd frame longer than ${MAX_FRAME_BYTES} bytes`);
        return;
      }
      if (info.content < 0 || info.content > MAX_FRAME_CONTENT) {
        throw new NbackupError('checksum', `a zstd frame of ${info.content < 0 ? 'unknown' : info.content} bytes; this restore reads frames of at most ${MAX_FRAME_CONTENT} bytes (use --stdout | tar --zstd -x)`);
      }
      const frame = buf.subarray(0, info.compressed);
      const out = Buffer.allocUnsafe(info.content);
      const n = await new Promise<number>((resolve, reject) =>
        this.addon.zstdDecompress(frame, out, (err, size) => (err ? reject(new NbackupError('checksum', `corrupt zstd frame: ${err.message}`)) : resolve(size))),
      );
      if (n > 0) this.push(out.subarray(0, n));
      const rest = buf.subarray(info.compressed);
      this.pending = rest.length ? [rest] : [];
      this.pendingBytes = rest.length;
    }
  }
}

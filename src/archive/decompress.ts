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

/**
 * The tar stream of archive `what` (named in errors) from its compressed bytes: gzip (node:zlib,
 * any number of members) or zstd. Damaged data is an NbackupError of kind 'checksum' naming it.
 */
export function decompressor(format: ArchiveFormat, what: string): Transform {
  if (format === 'gzip') return gunzip(what);
  const addon = loadAddon<ZstdAddon>('nbackup_codec');
  if (!addon) {
    throw new NbackupError('config', `restoring a .tar.zst needs the native codec addon (${addonProblem('nbackup_codec')}); install ${NATIVE_PACKAGES}, then npm ci — or use --stdout | tar --zstd -x`);
  }
  return new ZstdFrames(addon, what);
}

/**
 * node:zlib's gunzip, its own errors (code Z_DATA_ERROR, Z_BUF_ERROR…, bare messages such as
 * "incorrect header check") turned into a damaged-archive error that names the archive. zlib ends
 * the stream with destroy(error), so that is where they are caught; errors from upstream (the
 * connection) pass unchanged.
 */
function gunzip(what: string): Transform {
  const stream = zlib.createGunzip({ chunkSize: 256 * 1024 });
  const destroy = stream.destroy.bind(stream);
  stream.destroy = (err?: Error) => {
    const code = (err as { code?: unknown } | undefined)?.code;
    const ours = err !== undefined && !(err instanceof NbackupError) && typeof code === 'string' && code.startsWith('Z_');
    return destroy(ours ? new NbackupError('checksum', `${what}: corrupt gzip data: ${err.message}`, { cause: err }) : err);
  };
  return stream;
}

/**
 * zstd, one whole frame at a time on the thread pool: bytes are gathered until the frame at the
 * front is complete, which is then decompressed into a buffer of the size its header declares.
 *
 * Memory stays bounded whatever the input: a frame's output is pushed and, when the reader has
 * enough, the next frame waits for it to read (many tiny frames that each claim 64 MiB are
 * decompressed one by one, not all at once); and the gathered bytes are joined only once they
 * have doubled since the last look, so a long frame costs linear, not quadratic, copying.
 */
class ZstdFrames extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Gathered bytes below which the front frame is known to be incomplete. */
  private needBytes = 0;
  /** Resolves when the reader asks for more (set while a push was refused). */
  private readWaiter: (() => void) | null = null;

  constructor(
    private readonly addon: ZstdAddon,
    private readonly what: string,
  ) {
    super({ readableHighWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.drainFrames(false).then(() => done(), done);
  }

  override _read(size: number): void {
    const wake = this.readWaiter;
    this.readWaiter = null;
    wake?.();
    super._read(size);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.readWaiter?.();
    super._destroy(err, cb);
  }

  override _flush(done: TransformCallback): void {
    this.needBytes = 0;
    this.drainFrames(true).then(() => {
      if (this.pendingBytes > 0) done(new NbackupError('checksum', `${this.what}: the zstd stream ends inside a frame (${this.pendingBytes} bytes left)`));
      else done();
    }, done);
  }

  private async drainFrames(flushing: boolean): Promise<void> {
    for (;;) {
      if (this.pendingBytes === 0 || this.destroyed) return;
      if (!flushing && this.pendingBytes < this.needBytes) return;
      const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [buf];
      let info: { compressed: number; content: number } | null;
      try {
        info = this.addon.zstdFrame(buf);
      } catch (err) {
        throw new NbackupError('checksum', `${this.what}: corrupt zstd data: ${(err as Error).message}`);
      }
      if (info === null) {
        if (this.pendingBytes > MAX_FRAME_BYTES) throw new NbackupError('checksum', `${this.what}: a zstd frame longer than ${MAX_FRAME_BYTES} bytes`);
        this.needBytes = this.pendingBytes * 2;
        return;
      }
      this.needBytes = 0;
      if (info.content < 0 || info.content > MAX_FRAME_CONTENT) {
        throw new NbackupError('checksum', `${this.what}: a zstd frame of ${info.content < 0 ? 'unknown' : info.content} bytes; this restore reads frames of at most ${MAX_FRAME_CONTENT} bytes (use --stdout | tar --zstd -x)`);
      }
      const frame = buf.subarray(0, info.compressed);
      const out = Buffer.allocUnsafe(info.content);
      const n = await new Promise<number>((resolve, reject) =>
        this.addon.zstdDecompress(frame, out, (err, size) => (err ? reject(new NbackupError('checksum', `${this.what}: corrupt zstd frame: ${err.message}`)) : resolve(size))),
      );
      const rest = buf.subarray(info.compressed);
      this.pending = rest.length ? [rest] : [];
      this.pendingBytes = rest.length;
      if (n > 0 && !this.push(out.subarray(0, n))) await new Promise<void>((resolve) => (this.readWaiter = resolve));
    }
  }
}

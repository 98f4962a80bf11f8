/**
 * BlockDecoder: an archive's blocks decompressed on their own, several at once, and put back in
 * order — with libdeflate, with node:zlib (no addon) and with libzstd, fed in chunks that cut
 * blocks anywhere; and refused, with the block named, when the layout does not fit the bytes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import zlib from 'node:zlib';
import { BlockDecoder, layoutProblem, type BlockLayout } from '../../src/archive/block-decoder.js';
import { decompressor } from '../../src/archive/decompress.js';
import type { IndexHeader } from '../../src/archive/index-header.js';

const BLOCK = 64 * 1024;

/** A tar-sized stream of mixed bytes (some compressible, some not), 5⅓ blocks long. */
function sample(): Buffer {
  const out = Buffer.alloc(5 * BLOCK + BLOCK / 3);
  for (let i = 0; i < out.length; i += 4096) {
    if ((i / 4096) % 3 === 0) crypto.randomFillSync(out, i, Math.min(4096, out.length - i));
    else out.fill(`line ${i}\n`, i, Math.min(i + 4096, out.length));
  }
  return out;
}

function compressBlocks(tar: Buffer, format: 'gzip' | 'zstd'): Buffer[] {
  const blocks: Buffer[] = [];
  for (let at = 0; at < tar.length; at += BLOCK) {
    const part = tar.subarray(at, at + BLOCK);
    blocks.push(format === 'gzip' ? zlib.gzipSync(part, { level: 1 }) : execFileSync('zstd', ['-3', '-c', '-q'], { input: part }));
  }
  return blocks;
}

function layoutOf(format: 'gzip' | 'zstd', blocks: Buffer[], tarSize: number, first = 0): BlockLayout {
  return { format, blocks: blocks.map((b) => b.length), firstBlock: first, blockSize: BLOCK, tarSize };
}

/** Feeds `bytes` in pieces of 1..`maxPiece` bytes (seeded, so a failure repeats). */
function pieces(bytes: Buffer, maxPiece: number, seed: number): Readable {
  let s = seed;
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (s % maxPiece);
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return Readable.from(out, { objectMode: false });
}

/** The most Buffer memory held beyond what it was before `act`, sampled for 300 ms after it. */
async function peakBuffersAfter(act: () => void): Promise<number> {
  const before = process.memoryUsage().arrayBuffers;
  act();
  let peak = 0;
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 10));
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
  }
  return peak;
}

async function decodeAll(input: Readable, d: BlockDecoder): Promise<Buffer> {
  const got: Buffer[] = [];
  await pipeline(input, d, new Writable({ write: (c: Buffer, _e, cb) => (got.push(c), cb()) }));
  return Buffer.concat(got);
}

describe('BlockDecoder', () => {
  const tar = sample();

  for (const [format, native] of [['gzip', true], ['gzip', false], ['zstd', true]] as const) {
    it(`${format} (${native ? 'addon' : 'node:zlib'}): any cut of the input gives the tar back, in order`, async () => {
      const blocks = compressBlocks(tar, format);
      const archive = Buffer.concat(blocks);
      for (const [maxPiece, seed] of [[100, 1], [7000, 2], [300_000, 3]]) {
        const out = await decodeAll(pieces(archive, maxPiece, seed), new BlockDecoder(layoutOf(format, blocks, tar.length), native));
        assert.ok(out.equals(tar), `${format} pieces ≤ ${maxPiece}: ${out.length} bytes out of ${tar.length}`);
      }
      // A run of blocks from the middle, as an indexed restore reads it.
      const mid = await decodeAll(Readable.from([Buffer.concat(blocks.slice(2, 4))]), new BlockDecoder(layoutOf(format, blocks.slice(2, 4), tar.length, 2), native));
      assert.ok(mid.equals(tar.subarray(2 * BLOCK, 4 * BLOCK)));
      // The last block is short: it gives only what is left of the tar.
      const last = await decodeAll(Readable.from([blocks[5]]), new BlockDecoder(layoutOf(format, blocks.slice(5), tar.length, 5), native));
      assert.ok(last.equals(tar.subarray(5 * BLOCK)));
    });
  }

  it('a layout that does not fit the bytes stops with the block named', async () => {
    const blocks = compressBlocks(tar, 'gzip');
    const archive = Buffer.concat(blocks);
    const sizes = blocks.map((b) => b.length);
    const fails = async (layout: BlockLayout, input: Buffer, why: RegExp, native = true) =>
      assert.rejects(decodeAll(Readable.from([input]), new BlockDecoder(layout, native)), why);
    // Sizes moved between two blocks: the total is right, the cut is not.
    const moved = [...sizes];
    moved[1] += 10;
    moved[2] -= 10;
    await fails({ ...layoutOf('gzip', blocks, tar.length), blocks: moved }, archive, /block 1 of the archive does not decompress as its index says/);
    await fails({ ...layoutOf('gzip', blocks, tar.length), blocks: moved }, archive, /block 1 of the archive does not decompress as its index says/, false);
    // A tar size that puts more in the last block than it holds.
    await fails(layoutOf('gzip', blocks, tar.length + 512), archive, /block 5 .*holds 21845 tar bytes, the index says 22357/);
    // A block one byte short of what its data gives.
    await fails(layoutOf('gzip', blocks, tar.length - 1), archive, /block 5 .*holds more than/);
    // One flipped byte inside block 3.
    const flipped = Buffer.from(archive);
    const at = sizes[0] + sizes[1] + sizes[2] + Math.floor(sizes[3] / 2);
    flipped[at] ^= 0x40;
    // A flipped bit may break the deflate stream or the CRC, or make the block inflate past its share.
    await fails(layoutOf('gzip', blocks, tar.length), flipped, /block 3 of the archive does not decompress as its index says: (corrupt gzip data|a gzip block decompresses to more bytes)/);
    // Cut short, and too long.
    await fails(layoutOf('gzip', blocks, tar.length), archive.subarray(0, archive.length - 5), /the archive ends inside block 5/);
    await fails(layoutOf('gzip', blocks, tar.length), Buffer.concat([archive, Buffer.from('x')]), /1 bytes follow the last block the index describes/);
  });

  it('reads ahead only a few blocks when nothing takes its output', async () => {
    // Incompressible, so that each block is as large going in as coming out.
    const big = crypto.randomBytes(64 * BLOCK);
    const blocks = compressBlocks(big, 'gzip');
    let pulled = 0;
    const source = Readable.from(
      (function* () {
        for (const b of blocks) {
          pulled++;
          yield b;
        }
      })(),
      { objectMode: false, highWaterMark: 1 },
    );
    const d = new BlockDecoder(layoutOf('gzip', blocks, big.length));
    source.pipe(d);
    // Nothing reads `d`: once its buffers are full, it stops pulling from the source.
    let last = -1;
    for (let i = 0; i < 200 && pulled !== last; i++) {
      last = pulled;
      await new Promise((r) => setTimeout(r, 20));
    }
    // The output buffer (1 MiB = 16 blocks), the blocks in flight and the pipe's own buffers.
    assert.ok(pulled < 30, `${pulled} of 64 blocks pulled with nothing reading the output`);
    let out = 0;
    d.on('data', (c: Buffer) => (out += c.length));
    await new Promise((r) => d.on('end', r));
    assert.equal(out, big.length);
    assert.equal(pulled, 64);
  });

  it('a chunk of many tiny blocks that each claim a whole block is decompressed a few at a time, as it is read', async () => {
    const MiB = 1 << 20;
    const one = zlib.gzipSync(Buffer.alloc(MiB), { level: 1 }); // about 1 KiB for 1 MiB of output
    const n = 256;
    const d = new BlockDecoder({ format: 'gzip', blocks: new Array<number>(n).fill(one.length), firstBlock: 0, blockSize: MiB, tarSize: n * MiB });
    // Nothing reads: what it holds is a few blocks in flight and its 1 MiB output buffer.
    const peak = await peakBuffersAfter(() => d.write(Buffer.concat(new Array<Buffer>(n).fill(one))));
    assert.ok(peak < 32 * MiB, `${(peak / MiB).toFixed(0)} MiB of output held for ${n} MiB claimed, nothing read`);
    let out = 0;
    d.on('data', (c: Buffer) => (out += c.length));
    d.end();
    await new Promise((r) => d.on('end', r));
    assert.equal(out, n * MiB);
  });

  it('an index layout is refused when its blocks are larger than any block can be', () => {
    const h = { nbackupIndex: 1, format: 'gzip', blockSize: 1 << 20, tarSize: 3 << 20, archiveSize: 0, sha256: '0'.repeat(64), members: 1, blocks: 3 } as IndexHeader;
    assert.equal(layoutProblem(h, [1000, 2000, 3000]), null);
    assert.match(layoutProblem(h, [1000, 3 << 20, 3000]) ?? '', /block 1 is 3145728 bytes compressed/);
    assert.match(layoutProblem({ ...h, blockSize: 1 << 30 }, [1]) ?? '', /block size 1073741824 is above/);
  });
});

describe('decompressor (a whole .tar.zst, frame by frame)', () => {
  it('many tiny frames that each claim 64 MiB are decompressed one at a time, as the output is read', async () => {
    const MiB = 1 << 20;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-zframes-'));
    try {
      // zstd names the content size in the frame header when it knows the input's size (a file).
      fs.writeFileSync(path.join(dir, 'zeros'), Buffer.alloc(64 * MiB));
      const frame = execFileSync('zstd', ['-3', '-q', '-c', path.join(dir, 'zeros')]);
      assert.ok(frame.length < 64 * 1024, `a small frame (${frame.length} bytes)`);
      const n = 7;
      const d = decompressor('zstd', 'test.tar.zst');
      const peak = await peakBuffersAfter(() => d.write(Buffer.concat(new Array<Buffer>(n).fill(frame))));
      assert.ok(peak < 160 * MiB, `${(peak / MiB).toFixed(0)} MiB held for ${n} frames of 64 MiB, nothing read`);
      let out = 0;
      d.on('data', (c: Buffer) => (out += c.length));
      d.end();
      await new Promise((r) => d.on('end', r));
      assert.equal(out, n * 64 * MiB);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, test } from 'node:test';
import { codecFor, engineCodec, nativeCodecProblem, type BlockCodec } from '../../../src/agent/pipeline/codecs.js';
import { ParallelCompressor } from '../../../src/agent/pipeline/parallel-compressor.js';
import { addonPath } from '../../../src/native/addons.js';
import { END_OF_ARCHIVE, encodeHeader } from '../../../src/agent/pipeline/tar-header.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-codec-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function blocks(n: number, size: number): Buffer[] {
  // Mixed compressible and random blocks, so compression times differ and results come back out of order.
  return Array.from({ length: n }, (_, i) => (i % 3 === 0 ? crypto.randomBytes(size) : Buffer.alloc(size, `block ${i} `)));
}

/** Compresses `input` blocks through a ParallelCompressor; returns the concatenated output. */
async function compressAll(codec: BlockCodec, input: Buffer[], blockSize: number): Promise<Buffer> {
  const out: Buffer[] = [];
  const pc = new ParallelCompressor({
    codec,
    maxInFlight: 4,
    blockSize,
    // Delivered buffers are reused once the promise settles: keep copies.
    deliver: async (b) => {
      out.push(Buffer.from(b));
      await new Promise((r) => setImmediate(r));
    },
  });
  for (const b of input) await pc.push(b);
  await pc.end();
  assert.equal(out.length, input.length, 'one gzip member or zstd frame per block');
  assert.equal(pc.bytesOut, Buffer.concat(out).length);
  return Buffer.concat(out);
}

test('the native codec addon is built, loads, and links the system libraries (NBACKUP_ALLOW_ZLIB=1 where they cannot be)', (t) => {
  if (!nativeExpected(t)) return;
  const ldd = execFileSync('ldd', [addonPath('nbackup_codec')], { encoding: 'utf8' });
  for (const lib of ['libisal', 'libdeflate', 'libzstd']) assert.match(ldd, new RegExp(`${lib}\\.so\\.\\d+ => /`), `${lib} from the system:\n${ldd}`);
});

/** A small tar (three members) cut in 64 KiB blocks, so GNU tar can read what a codec made. */
function tarBlocks(): { blocks: Buffer[]; whole: Buffer } {
  const files = [crypto.randomBytes(70_000), Buffer.alloc(200_000, 'text '), Buffer.from('last')];
  const parts: Buffer[] = [];
  files.forEach((data, i) => {
    parts.push(encodeHeader({ name: `t/f${i}`, type: 'file', mode: 0o100644, uid: 0, gid: 0, size: data.length, mtime: 1_700_000_000 }));
    parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  });
  parts.push(END_OF_ARCHIVE);
  const whole = Buffer.concat(parts);
  const out: Buffer[] = [];
  for (let at = 0; at < whole.length; at += 64 * 1024) out.push(whole.subarray(at, at + 64 * 1024));
  return { blocks: out, whole };
}

const LEVELS = [
  ...[1, 2, 3, 4, 5, 6, 7, 8, 9].map((level) => ({ format: 'gzip' as const, level })),
  ...[1, 3, 9, 19].map((level) => ({ format: 'zstd' as const, level })),
];

for (const { format, level } of LEVELS) {
  test(`${format} level ${level}: ${format === 'gzip' ? 'gzip -t' : 'zstd -t'} and GNU tar accept the stream, which decodes to the input`, async (t) => {
    if (format === 'zstd' && !nativeExpected(t)) return;
    const codec = codecFor(format, level);
    const { blocks: input, whole } = tarBlocks();
    const all = await compressAll(codec, input, 64 * 1024);
    const file = path.join(dir, `l${format}${level}.tar.${format === 'gzip' ? 'gz' : 'zst'}`);
    fs.writeFileSync(file, all);
    execFileSync(format, ['-t', file]);
    assert.ok(execFileSync(format, ['-dc', file], { maxBuffer: 64 << 20 }).equals(whole));
    const listing = execFileSync('tar', [format === 'gzip' ? '-tzvf' : '--zstd', ...(format === 'gzip' ? [] : ['-tvf']), file], { encoding: 'utf8' });
    assert.match(listing, /t\/f2/);
    t.diagnostic(`${codec.engine} ${codec.engineLevel}: ${all.length} bytes for ${whole.length}`);
  });
}

test('node:zlib, the fallback, writes the same format: gzip -t accepts it and it decodes to the input', async () => {
  const input = [...blocks(12, 128 * 1024), Buffer.from('tail of the archive')];
  const all = await compressAll(engineCodec('zlib', 1)!, input, 128 * 1024);
  assert.ok(zlib.gunzipSync(all).equals(Buffer.concat(input)));
  const f = path.join(dir, 'zlib.gz');
  fs.writeFileSync(f, all);
  execFileSync('gzip', ['-t', f]);
});

/** True when the native tests may run; they fail without the addon unless NBACKUP_ALLOW_ZLIB=1. */
function nativeExpected(t: { diagnostic(m: string): void }): boolean {
  const problem = nativeCodecProblem();
  if (problem && process.env.NBACKUP_ALLOW_ZLIB === '1') {
    t.diagnostic(`native codecs missing, allowed by NBACKUP_ALLOW_ZLIB: ${problem}`);
    return false;
  }
  assert.equal(problem, '', `native codecs expected: ${problem}`);
  return true;
}

test('every engine level the addon offers decodes back to its input', async (t) => {
  if (!nativeExpected(t)) return;
  const input = Buffer.concat(blocks(4, 64 * 1024));
  const engines = [
    ...[0, 1, 2, 3].map((l) => ['igzip', l] as const),
    ...[1, 6, 12].map((l) => ['libdeflate', l] as const),
    ...[1, 22].map((l) => ['zstd', l] as const),
  ];
  for (const [engine, level] of engines) {
    const c = engineCodec(engine, level)!;
    const out = await c.compress(input, Buffer.allocUnsafe(c.bound(input.length)));
    const back = engine === 'zstd' ? execFileSync('zstd', ['-dc'], { input: out, maxBuffer: 16 << 20 }) : zlib.gunzipSync(out);
    assert.ok(back.equals(input), `${engine} ${level}`);
  }
});

test('incompressible input fits the bound of every engine', async (t) => {
  if (!nativeExpected(t)) return;
  const input = crypto.randomBytes(1 << 20);
  for (const [engine, level] of [['igzip', 0], ['igzip', 3], ['libdeflate', 1], ['zstd', 3]] as const) {
    const c = engineCodec(engine, level)!;
    const out = await c.compress(input, Buffer.allocUnsafe(c.bound(input.length)));
    assert.ok(out.length <= c.bound(input.length), `${engine} ${level}`);
  }
});

test('a level outside the format scale is refused', () => {
  assert.throws(() => codecFor('gzip', 10), /outside 1\.\.9 for gzip/);
  assert.throws(() => codecFor('zstd', 20), /outside 1\.\.19 for zstd/);
});

test('a block larger than the block size is refused', async () => {
  const pc = new ParallelCompressor({ codec: engineCodec('zlib', 1)!, maxInFlight: 2, blockSize: 1024, deliver: () => undefined });
  await assert.rejects(pc.push(Buffer.alloc(1025)), /exceeds the block size/);
});

test('a slow consumer holds the producer back: never more than maxInFlight blocks outstanding', async () => {
  let outstanding = 0;
  let peak = 0;
  const pc = new ParallelCompressor({
    codec: codecFor('gzip', 1),
    maxInFlight: 3,
    blockSize: 64 * 1024,
    deliver: async () => {
      // The scenario: a consumer slower than the compressor (not a synchronisation wait).
      await new Promise((r) => setTimeout(r, 5));
      outstanding--;
    },
  });
  for (const b of blocks(20, 64 * 1024)) {
    await pc.push(b);
    outstanding++;
    peak = Math.max(peak, outstanding);
  }
  await pc.end();
  assert.ok(peak <= 3, `peak outstanding ${peak}`);
  assert.equal(outstanding, 0);
});

test('a failing consumer fails the next push', async () => {
  const pc = new ParallelCompressor({
    codec: codecFor('gzip', 1),
    maxInFlight: 2,
    blockSize: 1024,
    deliver: () => Promise.reject(new Error('socket gone')),
  });
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 50; i++) await pc.push(Buffer.alloc(1024, i));
      await pc.end();
    })(),
    /socket gone/,
  );
});

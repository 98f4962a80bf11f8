import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_VERSION,
  AckStatus,
  DEFAULT_MAX_BUFFERED,
  type Decoded,
  FrameReader,
  ProtocolError,
  decodeAck,
  decodeChunkHeader,
  decodeConnectionKind,
  decodeControlFromServer,
  decodeHandshake,
  decodeMode,
  decodeServerDataMessage,
  encodeAck,
  encodeChunkHeader,
  encodeControlFromServer,
  encodeHandshake,
  encodeParallelInit,
  encodeSack,
  encodeSingleMode,
  encodeFinalAck,
  FinalStatus,
} from '../../protocol/index.js';
import { hex, UUID, VECTORS } from './vectors.js';

function isCode(code: string) {
  return (err: unknown) => err instanceof ProtocolError && err.code === code;
}

for (const v of VECTORS) {
  test(`${v.name}: fed one byte at a time through FrameReader`, () => {
    const r = new FrameReader();
    for (let i = 0; i < v.bytes.length - 1; i++) {
      r.push(v.bytes.subarray(i, i + 1));
      assert.equal(r.read(v.decode), null, `after ${i + 1} bytes`);
      assert.equal(r.buffered, i + 1);
    }
    r.push(v.bytes.subarray(v.bytes.length - 1));
    assert.deepEqual(r.read(v.decode), v.value);
    assert.equal(r.buffered, 0);
  });
}

test('a stream of several frames in random-sized pieces', () => {
  const frames = [
    encodeControlFromServer({ type: 'pong', timestampNs: 7n, load: 0.5, freeMiB: 3 }),
    encodeControlFromServer({ type: 'admit', slot: 1 }),
    encodeControlFromServer({ type: 'defer', minutes: 5 }),
    encodeControlFromServer({ type: 'rotate', streamIndex: 2 }),
    encodeControlFromServer({ type: 'abort', reason: 3 }),
  ];
  const stream = Buffer.concat(frames);
  let seed = 1;
  for (let round = 0; round < 50; round++) {
    const r = new FrameReader();
    const got: unknown[] = [];
    let at = 0;
    while (at < stream.length) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const n = 1 + (seed % 9);
      r.push(stream.subarray(at, at + n));
      at += n;
      for (let m = r.read(decodeControlFromServer); m !== null; m = r.read(decodeControlFromServer)) got.push(m);
    }
    assert.deepEqual(
      got.map((m) => (m as { type: string }).type),
      ['pong', 'admit', 'defer', 'rotate', 'abort'],
    );
    assert.equal(r.buffered, 0);
  }
});

test('server side of a session: peek the kind, read handshake and mode, hand the body on', () => {
  const body = Buffer.from('compressed bytes…');
  const wire = Buffer.concat([encodeHandshake({ agent: 'web', storage: 'st', backup: 'app' }), encodeSingleMode(), body]);
  const r = new FrameReader();
  r.push(wire.subarray(0, 2));
  assert.equal(r.peek(decodeConnectionKind), null);
  r.push(wire.subarray(2));
  assert.equal(r.peek(decodeConnectionKind), 'NBKP');
  assert.equal(r.buffered, wire.length, 'peek consumes nothing');
  assert.deepEqual(r.read(decodeHandshake), { version: PROTOCOL_VERSION, agent: 'web', storage: 'st', backup: 'app', format: 'gzip' });
  assert.deepEqual(r.read(decodeMode), { kind: 'single' });
  assert.deepEqual(r.takeAll(), body);
  assert.equal(r.buffered, 0);
  assert.deepEqual(r.takeAll(), Buffer.alloc(0));
});

test('agent side: ACK, then SACKs and the Final ACK', () => {
  const wire = Buffer.concat([
    encodeAck({ status: AckStatus.GO, message: '', sessionId: UUID }),
    encodeSack({ offset: 1 << 20 }),
    encodeSack({ offset: 2 << 20 }),
    encodeFinalAck({ status: FinalStatus.OK }),
  ]);
  const r = new FrameReader();
  r.push(wire);
  assert.deepEqual(r.read(decodeAck), { status: AckStatus.GO, message: '', sessionId: UUID });
  assert.deepEqual(r.read(decodeServerDataMessage), { type: 'sack', offset: 1 << 20 });
  assert.deepEqual(r.read(decodeServerDataMessage), { type: 'sack', offset: 2 << 20 });
  assert.deepEqual(r.read(decodeServerDataMessage), { type: 'final', status: FinalStatus.OK });
  assert.equal(r.read(decodeServerDataMessage), null);
  r.assertDrained();
});

test('parallel stream: chunk headers and payloads via take()', () => {
  const payloads = [Buffer.alloc(3000, 1), Buffer.alloc(0), Buffer.alloc(70_000, 2)];
  const wire = Buffer.concat(payloads.flatMap((p, i) => [encodeChunkHeader({ globalSeq: i, length: p.length }), p]));
  const r = new FrameReader();
  const got: Buffer[] = [];
  let header: { globalSeq: number; length: number } | null = null;
  let parts: Buffer[] = [];
  let have = 0;
  for (let at = 0; at < wire.length; at += 1000) {
    r.push(wire.subarray(at, at + 1000));
    for (;;) {
      if (header === null) {
        header = r.read(decodeChunkHeader);
        if (header === null) break;
      }
      const part = header.length > have ? r.take(header.length - have) : null;
      if (part) {
        parts.push(part);
        have += part.length;
      }
      if (have < header.length) break;
      got.push(Buffer.concat(parts));
      header = null;
      parts = [];
      have = 0;
    }
  }
  assert.deepEqual(got, payloads);
});

test('views handed out by take() stay intact while more is pushed', () => {
  const r = new FrameReader();
  r.push(hex('01 02 03'));
  r.push(hex('04 05 06'));
  const first = r.take(2);
  assert.deepEqual(first, hex('01 02'));
  for (let i = 0; i < 100; i++) r.push(Buffer.alloc(100, 0xee));
  const rest = r.take(4);
  assert.deepEqual(rest, hex('03 04 05 06'));
  r.takeAll();
  r.push(Buffer.alloc(10, 0xff));
  assert.deepEqual(first, hex('01 02'));
  assert.deepEqual(rest, hex('03 04 05 06'));
});

test('pushed chunks are not written into', () => {
  const chunk = hex('4e424b50 02 61');
  const copy = Buffer.from(chunk);
  const r = new FrameReader();
  r.push(chunk);
  r.push(hex('0a 62 0a 63 0a'));
  assert.ok(r.read(decodeHandshake));
  assert.deepEqual(chunk, copy);
});

test('a line that grows too long is a line-too-long error, not oversized', () => {
  const r = new FrameReader();
  r.push(hex('4e424b50 02'));
  const big = Buffer.alloc(100_000, 0x41);
  let thrown: unknown;
  let pushed = 0;
  while (pushed < big.length) {
    r.push(big.subarray(pushed, pushed + 100));
    pushed += 100;
    try {
      r.read(decodeHandshake);
    } catch (err) {
      thrown = err;
      break;
    }
  }
  assert.ok(thrown instanceof ProtocolError);
  assert.equal(thrown.code, 'line-too-long');
  assert.equal(pushed, 600, 'thrown as soon as 513 line bytes were there');
});

test('more than maxBuffered bytes without a complete frame throws oversized', () => {
  const never = (): Decoded<never> | null => null;
  const r = new FrameReader({ maxBuffered: 16 });
  r.push(Buffer.alloc(16));
  assert.equal(r.read(never), null);
  r.push(Buffer.alloc(1));
  assert.throws(() => r.read(never), isCode('oversized'));
  assert.throws(() => r.peek(() => null), isCode('oversized'));
  // A complete frame is fine however much follows it.
  const ok = new FrameReader({ maxBuffered: 16 });
  ok.push(Buffer.concat([encodeParallelInit({ maxStreams: 2, chunkSize: 1024 }), Buffer.alloc(1000)]));
  assert.deepEqual(ok.read(decodeMode), { kind: 'parallel', maxStreams: 2, chunkSize: 1024 });
  assert.equal(ok.buffered, 1000);
});

test('default limit is 64 KiB', () => {
  assert.equal(DEFAULT_MAX_BUFFERED, 64 * 1024);
  const needs = (n: number) => (b: Buffer): Decoded<number> | null => (b.length >= n ? { value: n, size: n } : null);
  const r = new FrameReader();
  r.push(Buffer.alloc(64 * 1024));
  assert.equal(r.read(needs(64 * 1024 + 1)), null);
  r.push(Buffer.alloc(1));
  assert.throws(() => r.read(needs(64 * 1024 + 2)), isCode('oversized'));
  assert.equal(r.read(needs(64 * 1024 + 1)), 64 * 1024 + 1);
});

test('a decoder error leaves the reader as it was', () => {
  const r = new FrameReader();
  r.push(hex('07 0a 0a'));
  assert.throws(() => r.read(decodeAck), isCode('bad-status'));
  assert.equal(r.buffered, 3);
});

test('assertDrained reports a truncated frame', () => {
  const r = new FrameReader();
  r.push(hex('5341434b 00'));
  assert.equal(r.read(decodeServerDataMessage), null);
  assert.throws(() => r.assertDrained('SACK'), (err: unknown) => isCode('truncated')(err) && /SACK \(5 bytes left\)/.test((err as Error).message));
});

test('byte-at-a-time feeding stays linear', () => {
  // 64 KiB one byte at a time with a read attempt after each: quadratic copying would show.
  const total = 64 * 1024;
  const needsAll = (b: Buffer): Decoded<number> | null => (b.length >= total ? { value: b.length, size: total } : null);
  const r = new FrameReader();
  const one = Buffer.alloc(1);
  const started = process.hrtime.bigint();
  for (let i = 0; i < total; i++) {
    r.push(one);
    const v = r.read(needsAll);
    if (i < total - 1) assert.equal(v, null);
    else assert.equal(v, total);
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(ms < 2000, `took ${ms} ms`);
});

test('rejects a nonsensical maxBuffered', () => {
  assert.throws(() => new FrameReader({ maxBuffered: 0 }));
  assert.throws(() => new FrameReader({ maxBuffered: 1.5 }));
});

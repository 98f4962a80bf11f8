/**
 * Random input must never make a decoder do anything but return null, return a frame, or throw
 * ProtocolError. Seeded, so a failure names the input and reproduces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Decoded,
  FrameReader,
  MagicBytes,
  ProtocolError,
  decodeAck,
  decodeChunkHeader,
  decodeChunkSack,
  decodeClientHello,
  decodeConnectionKind,
  decodeControlAbort,
  decodeControlAdmit,
  decodeControlDefer,
  decodeControlFromAgent,
  decodeControlFromServer,
  decodeControlOpen,
  decodeControlPing,
  decodeControlPong,
  decodeControlRotate,
  decodeControlRotateAck,
  decodeFinalAck,
  decodeHandshake,
  decodeHealthPing,
  decodeHealthPong,
  decodeMode,
  decodeParallelAck,
  decodeParallelInit,
  decodeParallelJoin,
  decodeResume,
  decodeResumeAck,
  decodeSack,
  decodeServerDataMessage,
  decodeTrailer,
} from '../../protocol/index.js';
import { VECTORS } from './vectors.js';
import { prng as seededInts } from '../helpers/tree.js';

/** The shared seeded PRNG, scaled to [0, 1). */
function prng(seed: number): () => number {
  const next = seededInts(seed);
  return () => next() / 4294967296;
}

const DECODERS: [string, (b: Buffer) => Decoded<unknown> | null][] = [
  ['Handshake', decodeHandshake],
  ['Ack', decodeAck],
  ['Mode', decodeMode],
  ['ParallelInit', decodeParallelInit],
  ['Sack', decodeSack],
  ['Trailer', decodeTrailer],
  ['FinalAck', decodeFinalAck],
  ['Resume', decodeResume],
  ['ResumeAck', decodeResumeAck],
  ['ParallelJoin', decodeParallelJoin],
  ['ParallelAck', decodeParallelAck],
  ['ChunkHeader', decodeChunkHeader],
  ['ChunkSack', decodeChunkSack],
  ['HealthPing', decodeHealthPing],
  ['HealthPong', decodeHealthPong],
  ['ControlOpen', decodeControlOpen],
  ['ControlPing', decodeControlPing],
  ['ControlPong', decodeControlPong],
  ['ControlRotate', decodeControlRotate],
  ['ControlRotateAck', decodeControlRotateAck],
  ['ControlAdmit', decodeControlAdmit],
  ['ControlDefer', decodeControlDefer],
  ['ControlAbort', decodeControlAbort],
  ['ServerDataMessage', decodeServerDataMessage],
  ['ControlFromAgent', decodeControlFromAgent],
  ['ControlFromServer', decodeControlFromServer],
  ['ClientHello', decodeClientHello],
  [
    'ConnectionKind',
    (b) => {
      const k = decodeConnectionKind(b);
      return k === null ? null : { value: k, size: 4 };
    },
  ],
];

const MAGICS = Object.values(MagicBytes);

/** Check one decoder on one input; returns the outcome for statistics. */
function check(name: string, decode: (b: Buffer) => Decoded<unknown> | null, input: Buffer): 'null' | 'value' | 'error' {
  let d: Decoded<unknown> | null;
  try {
    d = decode(input);
  } catch (err) {
    if (err instanceof ProtocolError) return 'error';
    assert.fail(`${name} threw ${String(err)} on ${input.toString('hex')}`);
  }
  if (d === null) return 'null';
  assert.ok(
    Number.isInteger(d.size) && d.size > 0 && d.size <= input.length,
    `${name} reported size ${d.size} for ${input.length} bytes: ${input.toString('hex')}`,
  );
  return 'value';
}

function randomBuffer(rand: () => number): Buffer {
  const r = rand();
  // Mostly short buffers (where the interesting boundaries are), now and then a long one.
  const len = r < 0.9 ? Math.floor(rand() * 48) : Math.floor(rand() * 1400);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    const k = rand();
    // Newlines and small numbers make lines and statuses come out right often enough to go deeper.
    b[i] = k < 0.1 ? 0x0a : k < 0.3 ? Math.floor(rand() * 5) : Math.floor(rand() * 256);
  }
  // Half the time start with a real magic so decoders get past the first check.
  if (len >= 4 && rand() < 0.5) MAGICS[Math.floor(rand() * MAGICS.length)].copy(b, 0);
  if (len >= 5 && rand() < 0.3) b[4] = 0x02;
  return b;
}

function mutate(rand: () => number, src: Buffer): Buffer {
  let b = Buffer.from(src);
  const edits = 1 + Math.floor(rand() * 3);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(rand() * (b.length + 1));
    const op = Math.floor(rand() * 6);
    if (op === 0 && b.length > 0) b[at % b.length] = Math.floor(rand() * 256);
    else if (op === 1 && b.length > 0) b[at % b.length] ^= 1 << Math.floor(rand() * 8);
    else if (op === 2) b = Buffer.concat([b.subarray(0, at), Buffer.of(Math.floor(rand() * 256)), b.subarray(at)]);
    else if (op === 3) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    else if (op === 4) b = b.subarray(0, at);
    else b = Buffer.concat([b.subarray(0, at), Buffer.alloc(Math.floor(rand() * 600), 0x61), b.subarray(at)]);
  }
  return b;
}

test('random buffers: every decoder returns null, a frame, or throws ProtocolError', () => {
  const rand = prng(0x6e626b70);
  const seen = { null: 0, value: 0, error: 0 };
  for (let i = 0; i < 5000; i++) {
    const input = randomBuffer(rand);
    for (const [name, decode] of DECODERS) seen[check(name, decode, input)]++;
  }
  // The generator must actually reach all three outcomes, or the test proves little.
  assert.ok(seen.null > 0 && seen.value > 0 && seen.error > 0, JSON.stringify(seen));
});

test('mutated valid frames: same guarantee, and a decoded frame re-decodes from its own bytes', () => {
  const rand = prng(42);
  for (let i = 0; i < 2000; i++) {
    const v = VECTORS[i % VECTORS.length];
    const input = mutate(rand, v.bytes);
    for (const [name, decode] of DECODERS) {
      if (check(name, decode, input) === 'value') {
        const d = decode(input);
        assert.ok(d);
        // A frame's value depends only on its own bytes, never on what follows them.
        assert.deepEqual(decode(input.subarray(0, d.size)), d, `${name} on ${input.toString('hex')}`);
      }
    }
  }
});

test('valid frames re-encode to the same bytes after decoding', () => {
  for (const v of VECTORS) {
    const d = v.decode(v.bytes);
    assert.ok(d);
    assert.deepEqual(d.value, v.value);
    assert.deepEqual(v.encode(), v.bytes);
  }
});

test('random data through FrameReader in random pieces never escapes as a non-ProtocolError', () => {
  const rand = prng(7);
  for (let i = 0; i < 300; i++) {
    const [name, decode] = DECODERS[i % DECODERS.length];
    const reader = new FrameReader({ maxBuffered: 2048 });
    const data = Buffer.concat([randomBuffer(rand), randomBuffer(rand), randomBuffer(rand)]);
    let at = 0;
    try {
      while (at < data.length) {
        const n = 1 + Math.floor(rand() * 64);
        reader.push(data.subarray(at, at + n));
        at += n;
        while (reader.read(decode) !== null) {
          /* keep reading frames */
        }
      }
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `${name}: ${String(err)}`);
    }
  }
});

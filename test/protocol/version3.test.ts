import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AbortStatus,
  AckStatus,
  FinalStatus,
  ProtocolError,
  RESUME_ACK_COMMITTED_SIZE,
  ResumeStatus,
  decodeAbortAck,
  decodeAck,
  decodeClientHello,
  decodeHandshake,
  decodeSessionAbort,
  encodeAbortAck,
  decodeResumeAck,
  encodeAck,
  encodeFinalAck,
  encodeHandshake,
  encodeResumeAck,
  encodeSessionAbort,
  finalAckDecoder,
  serverDataMessageDecoder,
  speaksReasons,
} from '../../protocol/index.js';
import { hex } from './vectors.js';

/** Version 3: answers that say why, byte for byte, and what a version-2 peer keeps seeing. */

test('a version-3 Final ACK is the status byte and a message line; version 2 keeps one byte', () => {
  const why = 'storage "main" is out of space';
  const v3 = encodeFinalAck({ status: FinalStatus.NO_SPACE, message: why }, 3);
  assert.deepEqual(v3, Buffer.concat([hex('03'), Buffer.from(why), hex('0a')]));
  assert.deepEqual(encodeFinalAck({ status: FinalStatus.OK, message: '' }, 3), hex('00 0a'));
  assert.deepEqual(encodeFinalAck({ status: FinalStatus.WRITE_ERROR, message: 'ignored' }, 2), hex('02'));
  const decode = finalAckDecoder(3);
  assert.deepEqual(decode(v3), { value: { status: FinalStatus.NO_SPACE, message: why }, size: v3.length });
  assert.equal(decode(v3.subarray(0, 5)), null, 'a partial message line waits for more');
  assert.deepEqual(finalAckDecoder(2)(hex('01')), { value: { status: FinalStatus.CHECKSUM_MISMATCH }, size: 1 });
  assert.ok(speaksReasons(3) && !speaksReasons(2));
});

test('a version-3 single-stream agent reads SACKs and the Final ACK with its reason', () => {
  const decode = serverDataMessageDecoder(3);
  const sack = hex('5341434b 0000000000100000');
  assert.deepEqual(decode(sack), { value: { type: 'sack', offset: 0x100000 }, size: 12 });
  const final = encodeFinalAck({ status: FinalStatus.CHECKSUM_MISMATCH, message: 'SHA-256 mismatch' }, 3);
  assert.deepEqual(decode(final)?.value, { type: 'final', status: FinalStatus.CHECKSUM_MISMATCH, message: 'SHA-256 mismatch' });
});

test('ResumeACK COMMITTED carries the archive size and SHA-256 (41 bytes); other statuses stay 9', () => {
  const sha = Buffer.alloc(32, 0xab);
  const bytes = encodeResumeAck({ status: ResumeStatus.COMMITTED, lastOffset: 123456, sha256: sha });
  assert.equal(bytes.length, RESUME_ACK_COMMITTED_SIZE);
  assert.deepEqual(bytes, Buffer.concat([hex('02 000000000001e240'), sha]));
  assert.deepEqual(decodeResumeAck(bytes), { value: { status: ResumeStatus.COMMITTED, lastOffset: 123456, sha256: sha }, size: 41 });
  assert.equal(decodeResumeAck(bytes.subarray(0, 20)), null);
  assert.equal(encodeResumeAck({ status: ResumeStatus.OK, lastOffset: 5 }).length, 9);
  assert.throws(() => encodeResumeAck({ status: ResumeStatus.COMMITTED, lastOffset: 1 }), ProtocolError);
});

test('ACK STORAGE_UNAVAILABLE is status 5 with its message', () => {
  const bytes = encodeAck({ status: AckStatus.STORAGE_UNAVAILABLE, message: 'storage "main" cannot be used', sessionId: '' });
  assert.equal(bytes[0], 5);
  assert.deepEqual(decodeAck(bytes)?.value, { status: AckStatus.STORAGE_UNAVAILABLE, message: 'storage "main" cannot be used', sessionId: '' });
});

test('a version-3 handshake ends with the format line; version 2 has none and means gzip', () => {
  const v3 = encodeHandshake({ version: 3, agent: 'web', storage: 'st', backup: 'app', format: 'zstd' });
  assert.deepEqual(v3, Buffer.concat([hex('4e424b50 03'), Buffer.from('web\nst\napp\nzstd\n')]));
  assert.deepEqual(decodeHandshake(v3), { value: { version: 3, agent: 'web', storage: 'st', backup: 'app', format: 'zstd' }, size: v3.length });
  assert.equal(decodeHandshake(v3.subarray(0, v3.length - 1)), null, 'the format line is awaited');
  const v2 = encodeHandshake({ version: 2, agent: 'web', storage: 'st', backup: 'app', format: 'zstd' });
  assert.deepEqual(v2, Buffer.concat([hex('4e424b50 02'), Buffer.from('web\nst\napp\n')]));
  assert.deepEqual(decodeHandshake(v2), { value: { version: 2, agent: 'web', storage: 'st', backup: 'app' }, size: v2.length });
  // A version from the future is read in its version-2 shape, so the server can refuse it by name.
  const v9 = Buffer.concat([hex('4e424b50 09'), Buffer.from('web\nst\napp\n')]);
  assert.deepEqual(decodeHandshake(v9)?.value, { version: 9, agent: 'web', storage: 'st', backup: 'app' });
});

test('ABRT (version 4 on) gives a session up; the AbortACK says whether it was discarded, unknown or already committed', () => {
  const abort = encodeSessionAbort({ sessionId: 'abc', reason: 'daemon stopping' });
  assert.deepEqual(abort, Buffer.concat([hex('41425254 05'), Buffer.from('abc\ndaemon stopping\n')]));
  assert.deepEqual(decodeClientHello(abort), { value: { kind: 'ABRT', value: { version: 5, sessionId: 'abc', reason: 'daemon stopping' } }, size: abort.length });
  assert.equal(decodeSessionAbort(abort.subarray(0, abort.length - 1)), null, 'the reason line is awaited');
  for (const status of [AbortStatus.DISCARDED, AbortStatus.NOT_FOUND, AbortStatus.COMMITTED]) {
    assert.deepEqual(decodeAbortAck(encodeAbortAck({ status })), { value: { status }, size: 1 });
  }
  assert.throws(() => decodeAbortAck(Buffer.of(7)), (e: unknown) => e instanceof ProtocolError);
});

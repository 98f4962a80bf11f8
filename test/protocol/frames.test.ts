import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbackupError } from '../../src/errors.js';
import {
  AbortReason,
  AckStatus,
  FinalStatus,
  HealthStatus,
  MAX_LINE_BYTES,
  MagicBytes,
  PROTOCOL_VERSION,
  ProtocolError,
  type ProtocolErrorCode,
  TRAILER_SIZE,
  SACK_SIZE,
  RESUME_ACK_SIZE,
  PARALLEL_ACK_SIZE,
  CHUNK_HEADER_SIZE,
  CHUNK_SACK_SIZE,
  HEALTH_PONG_SIZE,
  PARALLEL_INIT_SIZE,
  decodeAck,
  decodeClientHello,
  decodeConnectionKind,
  decodeControlAbort,
  decodeControlFromAgent,
  decodeControlFromServer,
  decodeControlOpen,
  decodeControlPong,
  decodeFinalAck,
  finalAckDecoder,
  decodeHandshake,
  decodeHealthPong,
  decodeMode,
  decodeParallelAck,
  decodeParallelInit,
  decodeResume,
  decodeResumeAck,
  decodeSack,
  decodeServerDataMessage,
  decodeTrailer,
  encodeAck,
  encodeChunkHeader,
  encodeChunkSack,
  encodeControlAbort,
  encodeControlFromAgent,
  encodeControlFromServer,
  encodeControlOpen,
  encodeControlPing,
  encodeControlPong,
  encodeFinalAck,
  encodeHandshake,
  encodeHealthPong,
  encodeParallelInit,
  encodeParallelJoin,
  encodeResume,
  encodeSack,
  encodeServerDataMessage,
  encodeSingleMode,
  encodeTrailer,
  isSupportedVersion,
  nameProblem,
  statusName,
} from '../../protocol/index.js';
import { hex, SHA_EMPTY_HEX, UUID, UUID_HEX, VECTORS } from './vectors.js';

function throwsCode(fn: () => unknown, code: ProtocolErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code, `code of: ${err.message}`);
    assert.equal(err.kind, 'protocol');
    if (message) assert.match(err.message, message);
    return true;
  });
}

test('constants match the spec', () => {
  assert.equal(PROTOCOL_VERSION, 0x05);
  assert.equal(MAX_LINE_BYTES, 512);
  assert.equal(TRAILER_SIZE, 44);
  assert.equal(SACK_SIZE, 12);
  assert.equal(RESUME_ACK_SIZE, 9);
  assert.equal(PARALLEL_ACK_SIZE, 9);
  assert.equal(CHUNK_HEADER_SIZE, 8);
  assert.equal(CHUNK_SACK_SIZE, 17);
  assert.equal(HEALTH_PONG_SIZE, 10);
  assert.equal(PARALLEL_INIT_SIZE, 5);
  assert.deepEqual(MagicBytes.NBKP, hex('4e424b50'));
  assert.deepEqual(MagicBytes.CABT, hex('43414254'));
  assert.ok(isSupportedVersion(2));
  assert.ok(isSupportedVersion(3));
  assert.ok(!isSupportedVersion(1));
  assert.equal(statusName(AckStatus, 2), 'BUSY');
  assert.equal(statusName(HealthStatus, 2), 'LOW_DISK');
  assert.equal(statusName(AbortReason, 1), 'DISK_FULL');
  assert.equal(statusName(FinalStatus, 7), 'unknown(0x07)');
  assert.equal(nameProblem('..'), 'may not be ".."'); // re-exported, not duplicated
});

for (const v of VECTORS) {
  test(`${v.name}: encodes to the exact bytes`, () => {
    assert.deepEqual(v.encode(), v.bytes);
  });

  test(`${v.name}: decodes the exact bytes, and leaves what follows`, () => {
    assert.deepEqual(v.decode(v.bytes), { value: v.value, size: v.bytes.length });
    const withTail = Buffer.concat([v.bytes, hex('deadbeef 0a 00')]);
    assert.deepEqual(v.decode(withTail), { value: v.value, size: v.bytes.length });
  });

  test(`${v.name}: every strict prefix decodes to null`, () => {
    for (let n = 0; n < v.bytes.length; n++) {
      assert.equal(v.decode(v.bytes.subarray(0, n)), null, `prefix of ${n} bytes`);
    }
  });
}

test('decoded byte fields do not alias the input', () => {
  const bytes = hex(`444f4e45 ${SHA_EMPTY_HEX} 0000000000000000`);
  const d = decodeTrailer(bytes);
  assert.ok(d);
  bytes.fill(0);
  assert.deepEqual(d.value.sha256, hex(SHA_EMPTY_HEX));
});

test('single-stream mode byte and ParallelInit encoders', () => {
  assert.deepEqual(encodeSingleMode(), hex('00'));
  assert.deepEqual(encodeParallelInit({ maxStreams: 1, chunkSize: 65536 }), hex('01 00010000'));
  assert.deepEqual(decodeMode(hex('00 ff')), { value: { kind: 'single' }, size: 1 });
  throwsCode(() => decodeMode(hex('02 00000000')), 'bad-value', /chunkSize/);
  throwsCode(() => decodeParallelInit(hex('00')), 'bad-value', /single/);
});

test('server data messages: SACK or Final ACK by first byte', () => {
  assert.deepEqual(decodeServerDataMessage(hex('5341434b 0000000000100000')), {
    value: { type: 'sack', offset: 1048576 },
    size: 12,
  });
  assert.deepEqual(decodeServerDataMessage(hex('01')), { value: { type: 'final', status: FinalStatus.CHECKSUM_MISMATCH }, size: 1 });
  assert.equal(decodeServerDataMessage(hex('')), null);
  assert.equal(decodeServerDataMessage(hex('53 41 43')), null);
  assert.equal(decodeServerDataMessage(hex('5341434b 00000000')), null);
  throwsCode(() => decodeServerDataMessage(hex('5341584b')), 'bad-magic', /SACK/);
  throwsCode(() => decodeServerDataMessage(hex('04')), 'bad-status', /0x04/);
  assert.deepEqual(encodeServerDataMessage({ type: 'sack', offset: 1 }), hex('5341434b 0000000000000001'));
  assert.deepEqual(encodeServerDataMessage({ type: 'final', status: FinalStatus.WRITE_ERROR }), hex('02'));
});

test('control frames: CPNG is a 12-byte ping from the agent and a 20-byte pong from the server', () => {
  const ping = hex('43504e47 0000000000000064');
  const pong = hex('43504e47 0000000000000064 3f000000 0000000a');
  assert.deepEqual(decodeControlFromAgent(ping), { value: { type: 'ping', timestampNs: 100n }, size: 12 });
  assert.equal(decodeControlFromServer(ping), null, 'a pong needs 20 bytes');
  assert.deepEqual(decodeControlFromServer(pong), {
    value: { type: 'pong', timestampNs: 100n, load: 0.5, freeMiB: 10 },
    size: 20,
  });
  assert.deepEqual(decodeControlFromAgent(hex('4352414b 05')), { value: { type: 'rotate-ack', streamIndex: 5 }, size: 5 });
  assert.deepEqual(decodeControlFromServer(hex('43524f54 05')), { value: { type: 'rotate', streamIndex: 5 }, size: 5 });
  assert.deepEqual(decodeControlFromServer(hex('4341444d 02')), { value: { type: 'admit', slot: 2 }, size: 5 });
  assert.deepEqual(decodeControlFromServer(hex('43444645 0000003c')), { value: { type: 'defer', minutes: 60 }, size: 8 });
  assert.deepEqual(decodeControlFromServer(hex('43414254 00000002')), {
    value: { type: 'abort', reason: AbortReason.SERVER_BUSY },
    size: 8,
  });
  // Frames that only travel the other way are a wrong magic in this direction.
  throwsCode(() => decodeControlFromAgent(hex('43524f54 05')), 'bad-magic', /CROT/);
  throwsCode(() => decodeControlFromServer(hex('4352414b 05')), 'bad-magic', /CRAK/);
  throwsCode(() => decodeControlFromServer(hex('43414254 00000004')), 'bad-status', /abort reason 4/);
  throwsCode(() => decodeControlAbort(hex('43414254 00000000')), 'bad-status');

  assert.deepEqual(encodeControlFromAgent({ type: 'ping', timestampNs: 100n }), ping);
  assert.deepEqual(encodeControlFromAgent({ type: 'rotate-ack', streamIndex: 5 }), hex('4352414b 05'));
  assert.deepEqual(encodeControlFromServer({ type: 'pong', timestampNs: 100n, load: 0.5, freeMiB: 10 }), pong);
  assert.deepEqual(encodeControlFromServer({ type: 'rotate', streamIndex: 5 }), hex('43524f54 05'));
  assert.deepEqual(encodeControlFromServer({ type: 'admit', slot: 2 }), hex('4341444d 02'));
  assert.deepEqual(encodeControlFromServer({ type: 'defer', minutes: 60 }), hex('43444645 0000003c'));
  assert.deepEqual(encodeControlFromServer({ type: 'abort', reason: AbortReason.SERVER_BUSY }), hex('43414254 00000002'));
});

test('connection kind: peek at the first 4 bytes', () => {
  assert.equal(decodeConnectionKind(hex('')), null);
  assert.equal(decodeConnectionKind(hex('4e424b')), null);
  assert.equal(decodeConnectionKind(hex('4e424b50')), 'NBKP');
  assert.equal(decodeConnectionKind(hex('52534d45 02')), 'RSME');
  assert.equal(decodeConnectionKind(hex('504a494e')), 'PJIN');
  assert.equal(decodeConnectionKind(hex('50494e47')), 'PING');
  assert.equal(decodeConnectionKind(hex('4354524c')), 'CTRL');
  throwsCode(() => decodeConnectionKind(Buffer.from('GET / HTTP/1.1\r\n')), 'bad-magic', /"GET "/);
  throwsCode(() => decodeConnectionKind(hex('5341434b')), 'bad-magic'); // a server-side magic
  throwsCode(() => decodeConnectionKind(hex('00ff1080')), 'bad-magic', /0x00 ff 10 80/);
});

test('client hello: the whole first frame of each connection kind', () => {
  const cases: [Buffer, unknown][] = [
    [hex('4e424b50 02 61 0a 62 0a 63 0a'), { kind: 'NBKP', value: { version: 2, agent: 'a', storage: 'b', backup: 'c' } }],
    [hex('52534d45 02 61 0a 62 0a 63 0a'), { kind: 'RSME', value: { version: 2, sessionId: 'a', agent: 'b', storage: 'c' } }],
    [hex('504a494e 02 61 0a 03'), { kind: 'PJIN', value: { version: 2, sessionId: 'a', streamIndex: 3 } }],
    [hex('50494e47'), { kind: 'PING', value: {} }],
    [hex('4354524c 0000003c'), { kind: 'CTRL', value: { keepaliveSeconds: 60 } }],
  ];
  for (const [bytes, value] of cases) {
    assert.deepEqual(decodeClientHello(bytes), { value, size: bytes.length });
    for (let n = 0; n < bytes.length; n++) assert.equal(decodeClientHello(bytes.subarray(0, n)), null);
  }
  throwsCode(() => decodeClientHello(hex('4e424b51')), 'bad-magic');
});

// ─── Lines ────────────────────────────────────────────────────────────────────────────────────

const NBKP_V2 = hex('4e424b50 02');

test('a line of exactly 512 bytes is accepted, 513 is not', () => {
  const agent = 'a'.repeat(512);
  const bytes = Buffer.concat([NBKP_V2, Buffer.alloc(512, 0x61), hex('0a 62 0a 63 0a')]);
  assert.deepEqual(encodeHandshake({ version: 2, agent, storage: 'b', backup: 'c' }), bytes);
  assert.deepEqual(decodeHandshake(bytes), { value: { version: 2, agent, storage: 'b', backup: 'c' }, size: bytes.length });
  // 512 bytes, no newline yet: could still be fine.
  assert.equal(decodeHandshake(Buffer.concat([NBKP_V2, Buffer.alloc(512, 0x61)])), null);
  // The 513th byte without a newline settles it, without waiting for more.
  throwsCode(() => decodeHandshake(Buffer.concat([NBKP_V2, Buffer.alloc(513, 0x61)])), 'line-too-long', /agent line.*512/);
  throwsCode(() => encodeHandshake({ agent: 'a'.repeat(513), storage: 'b', backup: 'c' }), 'line-too-long', /agent.*513 bytes/);
});

test('the line limit counts bytes, not characters', () => {
  const agent = 'é'.repeat(256); // 512 bytes
  const bytes = encodeHandshake({ agent, storage: 's', backup: 'b' });
  assert.equal(bytes.length, 5 + 513 + 2 + 2 + 'gzip\n'.length, 'version 3 carries the format line');
  assert.equal(decodeHandshake(bytes)?.value.agent, agent);
  throwsCode(() => encodeHandshake({ agent: agent + 'x', storage: 's', backup: 'b' }), 'line-too-long');
  throwsCode(() => decodeHandshake(Buffer.concat([NBKP_V2, Buffer.from(agent + 'x')])), 'line-too-long');
});

test('oversized lines in every line field throw line-too-long', () => {
  const big = Buffer.alloc(100_000, 0x41);
  throwsCode(() => decodeHandshake(Buffer.concat([NBKP_V2, big])), 'line-too-long', /agent/);
  throwsCode(() => decodeHandshake(Buffer.concat([NBKP_V2, hex('61 0a'), big])), 'line-too-long', /storage/);
  throwsCode(() => decodeHandshake(Buffer.concat([NBKP_V2, hex('61 0a 62 0a'), big])), 'line-too-long', /backup/);
  throwsCode(() => decodeAck(Buffer.concat([hex('00'), big])), 'line-too-long', /message/);
  throwsCode(() => decodeAck(Buffer.concat([hex('00 0a'), big])), 'line-too-long', /sessionId/);
  throwsCode(() => decodeResume(Buffer.concat([hex('52534d45 02'), big])), 'line-too-long', /sessionId/);
  throwsCode(() => decodeClientHello(Buffer.concat([hex('504a494e 02'), big.subarray(0, 513)])), 'line-too-long');
});

test('lines must be UTF-8; a BOM is kept, not stripped', () => {
  throwsCode(() => decodeHandshake(hex('4e424b50 02 ff 0a 62 0a 63 0a')), 'bad-utf8', /agent/);
  throwsCode(() => decodeHandshake(hex('4e424b50 02 61 0a c3 0a 63 0a')), 'bad-utf8', /storage/); // truncated sequence
  throwsCode(() => decodeHandshake(hex('4e424b50 02 61 0a 62 0a eda080 0a')), 'bad-utf8', /backup/); // encoded surrogate
  throwsCode(() => decodeAck(hex('00 c0af 0a 0a')), 'bad-utf8'); // overlong "/"
  const bom = hex('4e424b50 02 efbbbf78 0a 62 0a 63 0a');
  assert.equal(decodeHandshake(bom)?.value.agent, '\ufeffx');
  assert.deepEqual(encodeHandshake({ version: 2, agent: '\ufeffx', storage: 'b', backup: 'c' }), bom);
  // NUL and "/" are wire-legal; the name rules are applied by the server (it answers REJECT).
  assert.equal(decodeHandshake(hex('4e424b50 02 2e2e 0a 00 0a 2f 0a'))?.value.agent, '..');
});

test('encoders refuse strings that cannot be a line', () => {
  throwsCode(() => encodeHandshake({ agent: 'a\nb', storage: 's', backup: 'b' }), 'bad-value', /agent.*\\n/);
  throwsCode(() => encodeResume({ sessionId: 'x', agent: 'a', storage: 's\n' }), 'bad-value', /storage/);
  throwsCode(() => encodeHandshake({ agent: 'a\ud800', storage: 's', backup: 'b' }), 'bad-utf8', /surrogate/);
  assert.ok(encodeHandshake({ agent: 'a\ud83d\ude00', storage: 's', backup: 'b' })); // a proper pair is fine
  throwsCode(() => encodeHandshake({ agent: 1 as unknown as string, storage: 's', backup: 'b' }), 'bad-value');
});

test('a free-text message is made to fit its line, never refused: cut at a character boundary, newlines and lone surrogates replaced', () => {
  // 600 bytes of ASCII: cut to 509 and "...", exactly the 512-byte limit.
  const ack = decodeAck(encodeAck({ status: AckStatus.GO, message: 'x'.repeat(600), sessionId: UUID }))!.value;
  assert.equal(ack.message, 'x'.repeat(509) + '...');
  assert.equal(ack.sessionId, UUID);
  // 3-byte characters: the cut never splits one, and what is left still decodes as UTF-8.
  const fin = finalAckDecoder(PROTOCOL_VERSION)(encodeFinalAck({ status: FinalStatus.WRITE_ERROR, message: 'a' + '\u20ac'.repeat(300) }, PROTOCOL_VERSION))!.value;
  assert.equal(fin.message, 'a' + '\u20ac'.repeat(169) + '...');
  assert.ok(Buffer.byteLength(fin.message!) <= MAX_LINE_BYTES);
  // A message quoting what a peer sent may hold a newline or half a surrogate pair.
  const odd = decodeAck(encodeAck({ status: AckStatus.REJECT, message: 'bad "a\nb" \ud800', sessionId: '' }))!.value;
  assert.equal(odd.message, 'bad "a b" \ufffd');
  // A message under the limit is sent as it is.
  assert.equal(decodeAck(encodeAck({ status: AckStatus.REJECT, message: 'short', sessionId: '' }))!.value.message, 'short');
});

test('encoders default the version byte to PROTOCOL_VERSION', () => {
  assert.equal(encodeHandshake({ agent: 'a', storage: 'b', backup: 'c' })[4], 0x05);
  assert.equal(encodeResume({ sessionId: 'x', agent: 'a', storage: 'b' })[4], 0x05);
  assert.deepEqual(encodeParallelJoin({ sessionId: UUID, streamIndex: 0 }), hex(`504a494e 05 ${UUID_HEX} 0a 00`));
  assert.equal(encodeHandshake({ version: 9, agent: 'a', storage: 'b', backup: 'c' })[4], 0x09);
  throwsCode(() => encodeHandshake({ version: 256, agent: 'a', storage: 'b', backup: 'c' }), 'bad-value', /version/);
});

// ─── Magic, status and value errors ───────────────────────────────────────────────────────────

test('wrong magic throws as soon as 4 bytes are present', () => {
  assert.equal(decodeHandshake(hex('4e424b')), null);
  throwsCode(() => decodeHandshake(hex('4e424b51')), 'bad-magic', /expected magic "NBKP", got "NBKQ"/);
  throwsCode(() => decodeResume(hex('4e424b50 02')), 'bad-magic', /RSME/);
  throwsCode(() => decodeSack(hex('5341434c')), 'bad-magic');
  throwsCode(() => decodeTrailer(hex('646f6e65')), 'bad-magic', /DONE/); // lower-case "done"
  throwsCode(() => decodeControlOpen(hex('43545254 0000001e')), 'bad-magic');
  throwsCode(() => decodeControlPong(hex('43524f54 05')), 'bad-magic');
});

test('unknown status bytes throw bad-status', () => {
  throwsCode(() => decodeAck(hex('07')), 'bad-status', /ACK status 0x07/);
  throwsCode(() => decodeAck(hex('ff 0a 0a')), 'bad-status');
  throwsCode(() => decodeFinalAck(hex('04')), 'bad-status', /Final ACK/);
  throwsCode(() => decodeResumeAck(hex('03 0000000000000000')), 'bad-status', /ResumeACK/);
  throwsCode(() => decodeParallelAck(hex('03')), 'bad-status', /ParallelACK/);
  throwsCode(() => decodeHealthPong(hex('04')), 'bad-status', /health status/);
  throwsCode(() => encodeFinalAck({ status: 4 as FinalStatus }), 'bad-status');
  throwsCode(() => encodeFinalAck({ status: FinalStatus.NO_SPACE }, 2), 'bad-status', /version 2/);
  throwsCode(() => encodeAck({ status: 9 as AckStatus, message: '', sessionId: '' }), 'bad-status');
  throwsCode(() => encodeControlAbort({ reason: 0 as AbortReason }), 'bad-status');
  throwsCode(() => encodeHealthPong({ status: -1 as HealthStatus, freeBytes: 0 }), 'bad-status');
});

test('u64 fields beyond Number.MAX_SAFE_INTEGER throw bad-value', () => {
  throwsCode(() => decodeSack(hex('5341434b 0020000000000000')), 'bad-value', /offset 9007199254740992/);
  throwsCode(() => decodeSack(hex('5341434b ffffffffffffffff')), 'bad-value');
  throwsCode(() => decodeTrailer(hex(`444f4e45 ${SHA_EMPTY_HEX} 8000000000000000`)), 'bad-value', /size/);
  throwsCode(() => decodeResumeAck(hex('00 0100000000000000')), 'bad-value', /lastOffset/);
  throwsCode(() => decodeHealthPong(hex('00 ffffffffffffffff 0a')), 'bad-value', /freeBytes/);
});

test('other malformed fields', () => {
  throwsCode(() => decodeHealthPong(hex('00 0000000000000000 00')), 'bad-value', /"\\n"/);
  throwsCode(() => decodeControlOpen(hex('4354524c 00000000')), 'bad-value', /keepalive/);
  throwsCode(() => decodeControlPong(hex('43504e47 0000000000000000 7fc00000 00000000')), 'bad-value', /load.*NaN/);
  throwsCode(() => decodeControlPong(hex('43504e47 0000000000000000 7f800000 00000000')), 'bad-value', /Infinity/);
});

test('encoders refuse values that do not fit their field', () => {
  throwsCode(() => encodeSack({ offset: -1 }), 'bad-value', /offset/);
  throwsCode(() => encodeSack({ offset: 1.5 }), 'bad-value');
  throwsCode(() => encodeSack({ offset: 2 ** 53 }), 'bad-value');
  throwsCode(() => encodeSack({ offset: NaN }), 'bad-value');
  throwsCode(() => encodeTrailer({ sha256: Buffer.alloc(31), size: 0 }), 'bad-value', /sha256/);
  throwsCode(() => encodeTrailer({ sha256: Buffer.alloc(32), size: -5 }), 'bad-value', /size/);
  throwsCode(() => encodeParallelInit({ maxStreams: 0, chunkSize: 1 }), 'bad-value', /maxStreams/);
  throwsCode(() => encodeParallelInit({ maxStreams: 256, chunkSize: 1 }), 'bad-value');
  throwsCode(() => encodeParallelInit({ maxStreams: 1, chunkSize: 0 }), 'bad-value', /chunkSize/);
  throwsCode(() => encodeParallelInit({ maxStreams: 1, chunkSize: 2 ** 32 }), 'bad-value');
  throwsCode(() => encodeParallelJoin({ sessionId: 'x', streamIndex: 256 }), 'bad-value', /streamIndex/);
  throwsCode(() => encodeChunkHeader({ globalSeq: 2 ** 32, length: 0 }), 'bad-value', /globalSeq/);
  throwsCode(() => encodeChunkSack({ streamIndex: 0, chunkSeq: 0, offset: -1 }), 'bad-value');
  throwsCode(() => encodeHealthPong({ status: HealthStatus.READY, freeBytes: 2 ** 60 }), 'bad-value');
  throwsCode(() => encodeControlOpen({ keepaliveSeconds: 0 }), 'bad-value');
  throwsCode(() => encodeControlPing({ timestampNs: 5 as unknown as bigint }), 'bad-value', /bigint/);
  throwsCode(() => encodeControlPing({ timestampNs: 2n ** 63n }), 'bad-value');
  throwsCode(() => encodeControlPong({ timestampNs: 0n, load: NaN, freeMiB: 0 }), 'bad-value', /load/);
  throwsCode(() => encodeControlPong({ timestampNs: 0n, load: 1e39, freeMiB: 0 }), 'bad-value'); // Infinity as f32
  throwsCode(() => encodeAck({ status: AckStatus.GO, message: '', sessionId: '' }), 'bad-value', /GO needs/);
  throwsCode(() => encodeAck({ status: AckStatus.BUSY, message: '', sessionId: UUID }), 'bad-value', /empty/);
});

test('f32 load comes back as Math.fround', () => {
  const d = decodeControlPong(encodeControlPong({ timestampNs: 1n, load: 0.3, freeMiB: 1 }));
  assert.equal(d?.value.load, Math.fround(0.3));
});

test('ProtocolError is an NbackupError of kind protocol, with a code', () => {
  try {
    decodeFinalAck(hex('09'));
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof NbackupError);
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.kind, 'protocol');
    assert.equal(err.code, 'bad-status');
    assert.equal(err.name, 'ProtocolError');
  }
});

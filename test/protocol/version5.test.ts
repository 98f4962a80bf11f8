import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  HealthStatus,
  ProtocolError,
  ReadStatus,
  ReadTarget,
  StorageState,
  decodeArchiveInfo,
  decodeClientHello,
  decodeHealthReport,
  decodeIndexAck,
  decodeListHead,
  decodeReadHead,
  decodeStorageHealth,
  encodeArchiveInfo,
  encodeHealthReport,
  encodeHealthRequest,
  encodeIndexAck,
  encodeIndexPut,
  encodeListHead,
  encodeListRequest,
  encodeReadHead,
  encodeReadRequest,
  encodeStorageHealth,
  type Decoded,
} from '../../protocol/index.js';
import { hex } from './vectors.js';

/** Version 5: the read side and the named health report, byte for byte. */

/** Every strict prefix decodes to null ("need more"), the whole to `value` and its size. */
function roundTrip<T>(bytes: Buffer, decode: (b: Buffer) => Decoded<T> | null, value: T): void {
  for (let i = 0; i < bytes.length; i++) assert.equal(decode(bytes.subarray(0, i)), null, `prefix of ${i} bytes`);
  assert.deepEqual(decode(Buffer.concat([bytes, hex('ff ff')])), { value, size: bytes.length });
}

test('HLTH: request, report head and one frame per storage', () => {
  assert.deepEqual(encodeHealthRequest(), hex('48 4c 54 48 05'));
  assert.deepEqual(decodeClientHello(encodeHealthRequest())?.value, { kind: 'HLTH', value: { version: 5 } });
  const head = encodeHealthReport({ status: HealthStatus.LOW_DISK, storages: 2 });
  assert.deepEqual(head, hex('02 02'));
  roundTrip(head, decodeHealthReport, { status: HealthStatus.LOW_DISK, storages: 2 });
  const s = { name: 'main', state: StorageState.LOW, freeBytes: 5 * 2 ** 30, minFreeBytes: 64 * 2 ** 20 };
  const bytes = encodeStorageHealth(s);
  assert.deepEqual(bytes, Buffer.concat([Buffer.from('main\n'), hex('01 00 00 00 01 40 00 00 00 00 00 00 00 04 00 00 00')]));
  roundTrip(bytes, decodeStorageHealth, s);
  assert.throws(() => decodeStorageHealth(Buffer.concat([Buffer.from('x\n'), hex('07'), Buffer.alloc(16)])), (e: ProtocolError) => e.code === 'bad-status');
});

test('LIST: request, head and archive entries with and without SHA-256 and index', () => {
  const req = encodeListRequest({ agent: 'web-01', backup: '' });
  assert.deepEqual(req, Buffer.concat([Buffer.from('LIST'), hex('05'), Buffer.from('web-01\n\n')]));
  assert.deepEqual(decodeClientHello(req)?.value, { kind: 'LIST', value: { version: 5, agent: 'web-01', backup: '' } });
  roundTrip(encodeListHead({ status: ReadStatus.OK, message: '', count: 3 }), decodeListHead, { status: ReadStatus.OK, message: '', count: 3 });
  roundTrip(encodeListHead({ status: ReadStatus.REJECT, message: 'no', count: 0 }), decodeListHead, { status: ReadStatus.REJECT, message: 'no', count: 0 });
  const full = { storage: 'main', backup: 'etc', name: '2026-11-22T01-00-00-000.tar.zst', size: 1234, sha256: Buffer.alloc(32, 0xab), files: 77, indexSize: 99 };
  roundTrip(encodeArchiveInfo(full), decodeArchiveInfo, full);
  const bare = { ...full, sha256: null, files: null, indexSize: 0 };
  roundTrip(encodeArchiveInfo(bare), decodeArchiveInfo, bare);
  const bad = encodeArchiveInfo(full);
  bad[bad.length - 8 - 8 - 32 - 1] = 0x80;
  assert.throws(() => decodeArchiveInfo(bad), (e: ProtocolError) => e.code === 'bad-value' && /flags/.test(e.message));
  assert.throws(() => encodeArchiveInfo({ ...full, sha256: Buffer.alloc(31) }), /32 bytes/);
});

test('READ: request and head; IDXP and its answer', () => {
  const r = { agent: 'a', storage: 's', backup: 'b', name: 'n.tar.gz', target: ReadTarget.INDEX, offset: 2 ** 40, length: 7 };
  const bytes = encodeReadRequest(r);
  assert.deepEqual(bytes.subarray(bytes.length - 17), hex('01 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 07'));
  const hello = decodeClientHello(bytes);
  assert.deepEqual(hello?.value, { kind: 'READ', value: { version: 5, ...r } });
  assert.throws(() => encodeReadRequest({ ...r, offset: -1 }), (e: ProtocolError) => e.code === 'bad-value');
  const bad = Buffer.from(bytes);
  bad[bytes.length - 17] = 9;
  assert.throws(() => decodeClientHello(bad), (e: ProtocolError) => e.code === 'bad-status');
  roundTrip(encodeReadHead({ status: ReadStatus.OK, message: '', length: 5 }), decodeReadHead, { status: ReadStatus.OK, message: '', length: 5 });
  const put = encodeIndexPut({ sessionId: 'abc', length: 10 });
  assert.deepEqual(put, Buffer.concat([Buffer.from('IDXP'), hex('05'), Buffer.from('abc\n'), hex('00 00 00 00 00 00 00 0a')]));
  assert.deepEqual(decodeClientHello(put)?.value, { kind: 'IDXP', value: { version: 5, sessionId: 'abc', length: 10 } });
  roundTrip(encodeIndexAck({ status: ReadStatus.NOT_FOUND, message: 'gone' }), decodeIndexAck, { status: ReadStatus.NOT_FOUND, message: 'gone' });
});

/**
 * TarReader against crafted archives: PAX numbers that must be whole (size, uid, gid) are refused
 * unless they are safe non-negative integers, with a corrupt-archive error rather than a reader
 * that spins; and an archive cut inside a member's data is an error, never an endless loop.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { paxRecord, ustarHeader, withPax, END_OF_ARCHIVE, padTo512 } from '../../src/agent/pipeline/tar-header.js';
import { TarReader } from '../../src/archive/tar-reader.js';
import { NbackupError } from '../../src/errors.js';

const FIELDS = { mode: 0o644, uid: 1000, gid: 1000, mtime: 1_700_000_000, linkname: Buffer.alloc(0), devmajor: 0, devminor: 0 };

/** One regular file `f` holding `data`, behind a PAX header with `records`, and the end records. */
function archive(records: [string, string][], data = Buffer.from('hello')): Buffer {
  const name = Buffer.from('f');
  const header = ustarHeader(name, Buffer.alloc(0), 0x30, { ...FIELDS, size: data.length });
  const pax = records.map(([k, v]) => Buffer.from(paxRecord(k, v)));
  const body = Buffer.alloc(padTo512(data.length));
  data.copy(body);
  return Buffer.concat([withPax(pax, name, FIELDS.mtime, header), body, END_OF_ARCHIVE]);
}

/** Reads every member and its data; fails the test instead of hanging if data() never ends. */
async function readAll(tar: Buffer, chunk = tar.length): Promise<{ name: string; size: number; uid: number; gid: number; mtime: number; data: string }[]> {
  const parts: Buffer[] = [];
  for (let at = 0; at < tar.length; at += chunk) parts.push(tar.subarray(at, at + chunk));
  const reader = new TarReader(Readable.from(parts));
  const out = [];
  for (let m = await reader.next(); m !== null; m = await reader.next()) {
    const data: Buffer[] = [];
    let calls = 0;
    for (let b = await reader.data(); b !== null; b = await reader.data()) {
      assert.ok(++calls < 10_000, `data() still returning after ${calls} calls (last ${b.length} bytes): the reader spins`);
      data.push(b);
    }
    out.push({ name: m.name.toString(), size: m.size, uid: m.uid, gid: m.gid, mtime: m.mtime, data: Buffer.concat(data).toString() });
  }
  return out;
}

async function refused(tar: Buffer, pattern: RegExp): Promise<void> {
  await assert.rejects(readAll(tar), (err: unknown) => {
    assert.ok(err instanceof NbackupError, `expected an NbackupError, got ${String(err)}`);
    assert.equal(err.kind, 'checksum');
    assert.match(err.message, pattern);
    return true;
  });
}

test('well-formed PAX numbers are taken, a fractional mtime included', async () => {
  const got = await readAll(archive([['size', '5'], ['uid', '4294967296'], ['gid', '0'], ['mtime', '1700000000.25']]), 7);
  assert.deepEqual(got, [{ name: 'f', size: 5, uid: 4294967296, gid: 0, mtime: 1700000000.25, data: 'hello' }]);
});

test('a PAX size that is not a safe whole number is a corrupt archive, not an endless read', async () => {
  for (const size of ['0.5', '4.5', '1e3', '0x10', '9007199254740993', '-1', ' 5', '5abc']) {
    await refused(archive([['size', size]]), new RegExp(`PAX size .*${size.trim().replace(/[.+]/g, '\\$&')}`));
  }
});

test('PAX uid and gid must be whole too; mtime must be a number', async () => {
  await refused(archive([['uid', '1.5']]), /PAX uid/);
  await refused(archive([['gid', '99999999999999999999']]), /PAX gid/);
  await refused(archive([['mtime', '12:00']]), /PAX mtime/);
});

test('an archive cut inside a member’s data is reported as truncated', async () => {
  const whole = archive([], Buffer.alloc(3000, 0x61));
  await refused(whole.subarray(0, 512 + 512 + 512 + 1000), /truncated/);
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { END_OF_ARCHIVE, encodeHeader, paxRecord } from '../../../src/agent/pipeline/tar-header.js';

test('a ustar header is byte-exact: fields, checksum, magic', () => {
  const h = encodeHeader({ name: 'app/run.sh', type: 'file', mode: 0o100755, uid: 1000, gid: 100, size: 1234, mtime: 1700000000.9 });
  assert.equal(h.length, 512);
  assert.equal(h.subarray(0, 10).toString(), 'app/run.sh');
  assert.equal(h[10], 0);
  assert.equal(h.subarray(100, 108).toString(), '0000755\0');
  assert.equal(h.subarray(108, 116).toString(), '0001750\0');
  assert.equal(h.subarray(116, 124).toString(), '0000144\0');
  assert.equal(h.subarray(124, 136).toString(), '00000002322\0');
  assert.equal(h.subarray(136, 148).toString(), (1700000000).toString(8).padStart(11, '0') + '\0');
  assert.equal(h[156], 0x30);
  assert.equal(h.subarray(257, 265).toString('latin1'), 'ustar\u000000');
  const stored = parseInt(h.subarray(148, 154).toString(), 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  assert.equal(stored, sum);
  assert.equal(h[154], 0);
  assert.equal(h[155], 0x20);
});

test('pax records count their own length, including across a digit boundary', () => {
  assert.equal(paxRecord('path', 'abc'), '12 path=abc\n');
  // body " path=" + 91 chars + "\n" = 98 bytes; 98+2 = 100 needs 3 digits → 101.
  const r = paxRecord('path', 'x'.repeat(92));
  assert.equal(Buffer.byteLength(r), Number(r.split(' ')[0]));
  for (let n = 80; n < 120; n++) {
    const rec = paxRecord('path', 'é'.repeat(n));
    assert.equal(Buffer.byteLength(rec), Number(rec.split(' ')[0]), `length prefix wrong for n=${n}`);
  }
});

test('names needing PAX (long, unicode) and every entry type round-trip through GNU tar', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-tarhdr-'));
  try {
    const long = 'd'.repeat(120) + '/' + 'f'.repeat(150) + '.txt';
    const entries = [
      { name: 'a/', type: 'directory' as const, mode: 0o40700, size: 0 },
      { name: 'a/plain.txt', type: 'file' as const, mode: 0o100640, size: 5, data: 'hello' },
      { name: `a/${long}`, type: 'file' as const, mode: 0o100600, size: 2, data: 'hi' },
      { name: 'a/日本語/ファイル.txt', type: 'file' as const, mode: 0o100644, size: 1, data: 'x' },
      { name: 'a/link', type: 'symlink' as const, mode: 0o120777, size: 0, linkname: '../' + 'é'.repeat(80) },
      { name: 'a/hard', type: 'hardlink' as const, mode: 0o100640, size: 0, linkname: 'a/plain.txt' },
      { name: 'a/fifo', type: 'fifo' as const, mode: 0o10600, size: 0 },
    ];
    const parts: Buffer[] = [];
    for (const e of entries) {
      parts.push(encodeHeader({ ...e, uid: 0, gid: 0, mtime: 981173106 }));
      if (e.type === 'file') {
        const data = Buffer.alloc(Math.ceil(e.size / 512) * 512);
        data.write(e.data!);
        parts.push(data);
      }
    }
    parts.push(END_OF_ARCHIVE);
    const archive = path.join(dir, 't.tar');
    fs.writeFileSync(archive, Buffer.concat(parts));
    const listing = execFileSync('tar', ['-tvf', archive, '--quoting-style=literal', '--numeric-owner'], { encoding: 'utf8' });
    for (const e of entries) assert.ok(listing.includes(e.name.replace(/\/$/, '')), `listing lacks ${e.name}:\n${listing}`);
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    execFileSync('tar', ['-xpf', archive, '-C', out]);
    assert.equal(fs.readFileSync(path.join(out, 'a', long), 'utf8'), 'hi');
    assert.equal(fs.readFileSync(path.join(out, 'a/日本語/ファイル.txt'), 'utf8'), 'x');
    assert.equal(fs.readlinkSync(path.join(out, 'a/link')), '../' + 'é'.repeat(80));
    assert.equal(fs.statSync(path.join(out, 'a/hard')).ino, fs.statSync(path.join(out, 'a/plain.txt')).ino);
    assert.ok(fs.lstatSync(path.join(out, 'a/fifo')).isFIFO());
    assert.equal(fs.statSync(path.join(out, 'a/plain.txt')).mode & 0o7777, 0o640);
    assert.equal(Math.floor(fs.statSync(path.join(out, 'a/plain.txt')).mtimeMs / 1000), 981173106);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

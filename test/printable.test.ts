/**
 * Names printed for people are escaped as GNU tar's --quoting-style=escape escapes them, checked
 * against GNU tar itself; messages keep their backslashes but lose their control characters.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { printableName, printableText } from '../src/printable.js';

const ESC = '\x1b';

test('control characters and backslash are escaped in names; printable UTF-8 is kept', () => {
  assert.equal(printableName(Buffer.from(`evil${ESC}[31mred\nforged: line\ttab\\x`)), 'evil\\033[31mred\\nforged: line\\ttab\\\\x');
  assert.equal(printableName(Buffer.from('bell\x07 bs\x08 ff\x0c cr\r vt\x0b del\x7f nul\x00')), 'bell\\a bs\\b ff\\f cr\\r vt\\v del\\177 nul\\000');
  assert.equal(printableName(Buffer.from('café/日本語/😀 ok.txt')), 'café/日本語/😀 ok.txt');
  // U+009B is CSI to a terminal that takes 8-bit controls: its UTF-8 bytes, in octal.
  assert.equal(printableName(Buffer.from('c1\u009b31m')), 'c1\\302\\23331m');
  assert.equal(printableName(`text${ESC}\n`), 'text\\033\\n');
});

test('bytes that are not UTF-8 are octal; valid sequences beside them are kept', () => {
  assert.equal(printableName(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74])), 'caf\\351.t');
  assert.equal(printableName(Buffer.concat([Buffer.from('é'), Buffer.from([0xff, 0x1b]), Buffer.from('ü\\')])), 'é\\377\\033ü\\\\');
  // A sequence cut short is bytes, not a character.
  assert.equal(printableName(Buffer.from([0xe6, 0x97, 0x41])), '\\346\\227A');
});

test('the escapes are the ones GNU tar prints for the same names', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-printable-'));
  try {
    const names = [`a${ESC}[31mb`, 'new\nline', 'tab\there', 'back\\slash', 'del\x7f', 'bell\x07', 'c1\u009bx', 'ünï'];
    const raw = [...names.map((n) => Buffer.from(n)), Buffer.from([0x6c, 0x61, 0x74, 0xe9, 0xff])];
    for (const n of raw) fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), n]), '');
    const listed = execFileSync('tar', ['--quoting-style=escape', '-cf', '-', '-C', dir, '.'], { maxBuffer: 1 << 20 });
    const tarSays = execFileSync('tar', ['--quoting-style=escape', '-tf', '-'], { input: listed, env: { ...process.env, LC_ALL: 'C.UTF-8' } })
      .toString('utf8')
      .split('\n')
      .filter((l) => l !== '' && l !== './')
      .map((l) => l.replace(/^\.\//, ''))
      .sort();
    assert.deepEqual(raw.map((n) => printableName(n)).sort(), tarSays);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('messages lose their control characters but keep their backslashes', () => {
  assert.equal(printableText(`open '/x/a${ESC}]0;pwn\x07b': EEXIST\nsecond`), "open '/x/a\\033]0;pwn\\ab': EEXIST\\nsecond");
  assert.equal(printableText('already\\033 escaped \\\\ name'), 'already\\033 escaped \\\\ name');
});

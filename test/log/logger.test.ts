/** The text log format prints values unquoted when they have no spaces: a file name in one must not act on the terminal. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createLogger, flushLogs } from '../../src/log/logger.js';
import { waitUntilAsync } from '../helpers/wait.js';

test('text lines carry no raw control characters, from a value or from the message', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-log-'));
  try {
    const file = path.join(dir, 'agent.log');
    const log = createLogger({ level: 'info', format: 'text', file }, 'nbackup-agent');
    log.warn({ path: '/src/a\x1b[31mred', other: 'del\x7fc1\u009b' }, 'cannot read \x1b]0;pwned\x07');
    await flushLogs(log);
    // The file is an fs.WriteStream: its write lands on the thread pool, after the flush.
    await waitUntilAsync(async () => (await fs.promises.readFile(file, 'utf8')).endsWith('\n'), 5000, 'the log line in the file', () => fs.readFileSync(file, 'utf8'));
    const text = fs.readFileSync(file, 'utf8');
    assert.equal(text.split('\n').filter(Boolean).length, 1, text);
    assert.doesNotMatch(text, /[\x00-\x09\x0b-\x1f\x7f-\x9f]/, JSON.stringify(text));
    assert.match(text, / WARN cannot read \\033\]0;pwned\\a name=nbackup-agent path=\/src\/a\\033\[31mred other=del\\177c1\\302\\233\n$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

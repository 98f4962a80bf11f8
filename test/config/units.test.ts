import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../../src/config/index.js';

const KB = 1024;
const MB = 1024 * KB;
const GB = 1024 * MB;

test('parseSize accepts bytes and binary units, any case, optional space', () => {
  const cases: [string | number, number][] = [
    [0, 0],
    [1048576, MB],
    ['1048576', MB],
    ['512b', 512],
    ['512B', 512],
    ['64kb', 64 * KB],
    ['64KB', 64 * KB],
    ['64 kb', 64 * KB],
    ['64k', 64 * KB],
    ['64KiB', 64 * KB],
    ['256mb', 256 * MB],
    ['256m', 256 * MB],
    ['256MiB', 256 * MB],
    ['1.5mb', 1.5 * MB],
    ['1gb', GB],
    ['1G', GB],
    ['2gib', 2 * GB],
    ['1tb', 1024 * GB],
    ['  8mb  ', 8 * MB],
  ];
  for (const [input, bytes] of cases) assert.equal(parseSize(input), bytes, `parseSize(${JSON.stringify(input)})`);
});

test('parseSize refuses garbage and says what it expects', () => {
  for (const bad of ['', 'mb', '1.5', '1.5.5mb', '-1mb', '10 zb', '1mb2', 'ten mb', '1 m b', -1, 1.5, Number.NaN, Infinity]) {
    assert.throws(
      () => parseSize(bad as string | number),
      (err: Error) => /expected a size such as/.test(err.message),
      `parseSize(${JSON.stringify(bad)})`,
    );
  }
});

test('parseDuration accepts ms, s, m, h and combinations', () => {
  const cases: [string, number][] = [
    ['0ms', 0],
    ['250ms', 250],
    ['1s', 1000],
    ['1.5s', 1500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1h30m', 5_400_000],
    ['1h 30m', 5_400_000],
    ['2m30s', 150_000],
    ['1m500ms', 60_500],
    [' 10s ', 10_000],
  ];
  for (const [input, ms] of cases) assert.equal(parseDuration(input), ms, `parseDuration(${JSON.stringify(input)})`);
});

test('parseDuration refuses bare numbers and garbage', () => {
  assert.throws(() => parseDuration('30'), /ambiguous/);
  assert.throws(() => parseDuration('1.5'), /ambiguous/);
  assert.throws(() => parseDuration(30 as unknown as string), /ambiguous/);
  for (const bad of ['', 's', '1d', '10 sec', '1h30', '-5s', '5mss', 'ms5', '1h-30m']) {
    assert.throws(() => parseDuration(bad), /expected a duration/, `parseDuration(${JSON.stringify(bad)})`);
  }
});

test('formatBytes and formatDuration print values the parsers read back', () => {
  assert.equal(formatBytes(0), '0b');
  assert.equal(formatBytes(512), '512b');
  assert.equal(formatBytes(64 * KB), '64kb');
  assert.equal(formatBytes(1.5 * MB), '1.5mb');
  assert.equal(formatBytes(256 * MB), '256mb');
  assert.equal(formatBytes(GB), '1gb');
  assert.equal(formatDuration(0), '0ms');
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(1500), '1.5s');
  assert.equal(formatDuration(60_000), '1m');
  assert.equal(formatDuration(5_400_000), '1h30m');
  assert.equal(formatDuration(3_600_000 + 1), '1h0.001s');
  for (const n of [0, 1, 1000, 65536, 1.5 * MB, 3 * GB]) assert.equal(parseSize(formatBytes(n)), n);
  for (const ms of [0, 1, 999, 1000, 1500, 61_000, 5_400_000, 3_600_001, 86_400_000]) {
    assert.equal(parseDuration(formatDuration(ms)), ms);
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AutoScaler, type ScaleDecision } from '../../../src/agent/session/autoscaler.js';

/** Feeds throughput samples produced by `bpsFor(streams)`; returns every decision. */
function drive(scaler: AutoScaler, bpsFor: (streams: number) => number, windows: number): ScaleDecision[] {
  const out: ScaleDecision[] = [];
  for (let i = 0; i < windows; i++) {
    const d = scaler.sample(bpsFor(scaler.streams));
    if (d) out.push(d);
  }
  return out;
}

test('adds streams while each one brings at least 10 %, then holds', () => {
  // A link where each flow gets 10 MB/s until the pipe (35 MB/s) is full.
  const s = new AutoScaler({ max: 8, settle: 3 });
  const d = drive(s, (n) => Math.min(35, 10 * n) * 1e6, 40);
  assert.deepEqual(
    d.map((x) => [x.action, x.streams]),
    [
      ['add', 2],
      ['add', 3],
      ['add', 4],
      // 3 → 4 streams: 30 → 35 MB/s (+17 %), worth one more probe; 4 → 5: +0 %, stop.
      ['add', 5],
      ['hold', 5],
    ],
  );
  assert.equal(s.streams, 5);
  assert.ok(s.settled);
  const last = d[d.length - 1];
  assert.equal(last.gain, 0);
  assert.equal(last.beforeBps, 35e6);
  assert.match(last.reason, /only 0%/);
});

test('never goes beyond max, and says so', () => {
  const s = new AutoScaler({ max: 3, settle: 2 });
  const d = drive(s, (n) => n * 1e6, 30);
  assert.equal(s.streams, 3);
  assert.deepEqual(
    d.map((x) => x.action),
    ['add', 'add', 'hold'],
  );
  assert.match(d[2].reason, /configured 3 streams/);
});

test('a producer-bound backup stays at two streams (the probe) and stops', () => {
  const s = new AutoScaler({ max: 8, settle: 3 });
  const d = drive(s, () => 50e6, 30);
  assert.equal(s.streams, 2);
  assert.deepEqual(
    d.map((x) => x.action),
    ['add', 'hold'],
  );
});

test('hysteresis: one noisy window does not trigger a decision before the settle period', () => {
  const s = new AutoScaler({ max: 4, settle: 3 });
  assert.equal(s.sample(1e6), null);
  assert.equal(s.sample(100e6), null);
  const d = s.sample(1e6);
  assert.ok(d && d.action === 'add');
  // The next judgement needs three windows with two streams.
  assert.equal(s.sample(1e6), null);
  assert.equal(s.sample(1e6), null);
  assert.ok(s.sample(1e6));
});

test('max 1: nothing to scale', () => {
  const s = new AutoScaler({ max: 1 });
  assert.ok(s.settled);
  assert.equal(drive(s, () => 1e6, 10).length, 0);
  assert.equal(s.streams, 1);
});

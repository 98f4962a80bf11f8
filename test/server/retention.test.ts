import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoWeek, periodOf, selectRetention, type KeepPolicy } from '../../src/server/retention.js';

const NONE: KeepPolicy = { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 };
const at = (iso: string) => ({ name: iso, time: Date.parse(`${iso}Z`) });
const kept = (archives: { name: string; time: number }[], p: Partial<KeepPolicy>) =>
  selectRetention(archives, { ...NONE, ...p }).filter((d) => d.keep).map((d) => d.name).sort();

test('ISO weeks and UTC periods across year boundaries', () => {
  assert.equal(isoWeek(Date.parse('2026-01-01T12:00Z')), '2026-W01'); // a Thursday
  assert.equal(isoWeek(Date.parse('2027-01-01T00:00Z')), '2026-W53'); // a Friday: still 2026's last week
  assert.equal(isoWeek(Date.parse('2024-12-30T00:00Z')), '2025-W01'); // a Monday in 2025's first week
  assert.equal(isoWeek(Date.parse('2026-11-22T23:59Z')), '2026-W47'); // a Sunday ends its week
  assert.equal(isoWeek(Date.parse('2026-11-23T00:00Z')), '2026-W48');
  assert.equal(periodOf('daily', Date.parse('2026-12-31T23:59:59.999Z')), '2026-12-31');
  assert.equal(periodOf('hourly', Date.parse('2027-01-01T00:00:00Z')), '2027-01-01T00');
  assert.equal(periodOf('monthly', Date.parse('2026-02-28T10:00Z')), '2026-02');
  assert.equal(periodOf('yearly', Date.parse('2026-12-31T23:59Z')), '2026');
});

test('last keeps the newest N; daily keeps the newest of each of the N most recent days', () => {
  const a = [at('2026-11-20T01:00'), at('2026-11-20T13:00'), at('2026-11-21T02:00'), at('2026-11-22T02:00'), at('2026-11-22T03:00')];
  assert.deepEqual(kept(a, { last: 2 }), ['2026-11-22T02:00', '2026-11-22T03:00']);
  assert.deepEqual(kept(a, { daily: 2 }), ['2026-11-21T02:00', '2026-11-22T03:00']);
  assert.deepEqual(kept(a, { daily: 9 }), ['2026-11-20T13:00', '2026-11-21T02:00', '2026-11-22T03:00']);
  const d = selectRetention(a, { ...NONE, last: 1, daily: 3 });
  assert.deepEqual(d[0].reasons, ['last 1/1', 'daily 2026-11-22']);
  assert.equal(d.find((x) => x.name === '2026-11-20T01:00')?.keep, false);
  assert.deepEqual(kept([], { last: 3 }), []);
});

test('gaps: periods without backups are not counted', () => {
  // Down for three months: daily 3 still keeps three days, weekly 2 two weeks.
  const a = [at('2026-05-01T02:00'), at('2026-05-02T02:00'), at('2026-05-03T02:00'), at('2026-08-10T02:00')];
  assert.deepEqual(kept(a, { daily: 3 }), ['2026-05-02T02:00', '2026-05-03T02:00', '2026-08-10T02:00']);
  assert.deepEqual(kept(a, { weekly: 2 }), ['2026-05-03T02:00', '2026-08-10T02:00']); // 2026-W18 and W33
  assert.deepEqual(kept(a, { monthly: 5 }), ['2026-05-03T02:00', '2026-08-10T02:00']);
});

test('over a year boundary: monthly and yearly pick the newest of each', () => {
  const a = [at('2025-11-30T02:00'), at('2025-12-15T02:00'), at('2025-12-31T23:00'), at('2026-01-01T01:00'), at('2026-01-20T02:00')];
  assert.deepEqual(kept(a, { monthly: 3 }), ['2025-11-30T02:00', '2025-12-31T23:00', '2026-01-20T02:00']);
  assert.deepEqual(kept(a, { yearly: 5 }), ['2025-12-31T23:00', '2026-01-20T02:00']);
  // 2025-12-31 (Wed) and 2026-01-01 (Thu) share ISO week 2026-W01.
  assert.deepEqual(kept(a, { weekly: 2 }), ['2026-01-01T01:00', '2026-01-20T02:00']);
  assert.deepEqual(kept(a, { weekly: 3 }), ['2025-12-15T02:00', '2026-01-01T01:00', '2026-01-20T02:00']);
});

test('a burst of backups today rotates out nothing older than today that the policy kept', () => {
  const policy: KeepPolicy = { last: 5, hourly: 0, daily: 7, weekly: 4, monthly: 6, yearly: 1 };
  const now = Date.parse('2026-11-22T12:00Z');
  const today = Date.parse('2026-11-22T00:00Z');
  // One backup a day at 06:00 for 60 days, today's included.
  const history = Array.from({ length: 60 }, (_, i) => ({ name: `old-${String(i).padStart(2, '0')}`, time: now - (i + 0.25) * 86_400_000 }));
  const keptBefore = selectRetention(history, policy).filter((d) => d.keep && d.time < today);
  // Days 1–6 (daily), the Sundays ending the three weeks before this one (weekly), and the last
  // days of October and September (monthly; 60 days reach back to September 23).
  assert.equal(keptBefore.length, 6 + 3 + 2, keptBefore.map((d) => `${d.name}: ${d.reasons.join(', ')}`).join('\n'));
  const burst = Array.from({ length: 200 }, (_, i) => ({ name: `burst-${String(i).padStart(3, '0')}`, time: now + i * 1000 }));
  const after = new Map(selectRetention([...history, ...burst], policy).map((d) => [d.name, d]));
  for (const d of keptBefore) assert.equal(after.get(d.name)?.keep, true, `${d.name} (${d.reasons.join(', ')}) was pushed out by the burst`);
  assert.equal([...after.values()].filter((d) => d.keep && d.name.startsWith('burst-')).length, 5, 'of the burst, only the newest `last` are kept');
  assert.equal(after.get('old-00')?.keep, false, "today's earlier copy is superseded by today's newest");
});

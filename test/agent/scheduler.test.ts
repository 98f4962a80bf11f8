import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { BackupConfig } from '../../src/config/index.js';
import { Scheduler } from '../../src/agent/scheduler.js';

/**
 * The scheduler on a mocked clock (node:test's timers and Date): each entry runs when its cron
 * schedule fires, one backup at a time, a run that comes while the same entry is still queued or
 * running is skipped with a log line, and stop() waits for the backup in progress.
 */

/** Lets pending promise jobs run (a turn of the event loop; setImmediate is not mocked). */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function entry(name: string, schedule: string): BackupConfig {
  return {
    name,
    storage: 'main',
    schedule,
    parallels: 0,
    auto_scaler: { enabled: true },
    sources: [{ path: '/srv' }],
    exclude: [],
    resume: { buffer_size: 1 << 20, chunk_size: 1 << 20 },
    compression: { format: 'gzip', level: 1 },
    run_limit: 3600_000,
    bandwidth_limit: undefined,
    before: undefined,
    after: undefined,
    hook_timeout: 60_000,
  };
}

interface Harness {
  scheduler: Scheduler;
  started: string[];
  logs: Record<string, unknown>[];
  /** Finishes the oldest unfinished run (optionally with an error). */
  finish: (err?: Error) => Promise<void>;
  advance: (ms: number) => Promise<void>;
}

function harness(t: TestContext, entries: BackupConfig[], startIso: string): Harness {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.parse(startIso) });
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const started: string[] = [];
  const pending: { resolve: () => void; reject: (e: Error) => void }[] = [];
  const scheduler = new Scheduler(
    entries,
    (e) =>
      new Promise<void>((resolve, reject) => {
        started.push(e.name);
        pending.push({ resolve, reject });
      }),
    log,
  );
  scheduler.start();
  t.after(() => void scheduler.stop());
  return {
    scheduler,
    started,
    logs,
    finish: async (err) => {
      const p = pending.shift();
      assert.ok(p, 'no run is in progress');
      if (err) p.reject(err);
      else p.resolve();
      await settle();
    },
    advance: async (ms) => {
      t.mock.timers.tick(ms);
      await settle();
    },
  };
}

test('an entry runs when its schedule fires, and not before', async (t) => {
  const h = harness(t, [entry('app', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  await h.advance(4999);
  assert.deepEqual(h.started, []);
  await h.advance(1);
  assert.deepEqual(h.started, ['app']);
  await h.finish();
  await h.advance(10_000);
  assert.deepEqual(h.started, ['app', 'app']);
  const scheduled = h.logs.filter((l) => l.msg === 'backup scheduled').map((l) => l.next);
  assert.deepEqual(scheduled.slice(0, 2), ['2026-01-01T00:00:10.000Z', '2026-01-01T00:00:20.000Z']);
});

test('backups run one at a time: an entry due while another runs waits its turn', async (t) => {
  const h = harness(t, [entry('a', '*/10 * * * * *'), entry('b', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  await h.advance(5000);
  assert.deepEqual(h.started, ['a'], 'b is queued behind a');
  assert.equal(h.scheduler.busy, true);
  await h.finish();
  assert.deepEqual(h.started, ['a', 'b']);
  await h.finish();
  assert.equal(h.scheduler.busy, false);
});

test('a run that fires while the previous run of the same entry is going is skipped and logged', async (t) => {
  const h = harness(t, [entry('app', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  await h.advance(5000);
  await h.advance(10_000);
  await h.advance(10_000);
  assert.deepEqual(h.started, ['app'], 'no second run stacked up');
  assert.equal(h.logs.filter((l) => l.msg === 'previous run still in progress; this run is skipped' && l.backup === 'app').length, 2);
  await h.finish();
  assert.deepEqual(h.started, ['app'], 'skipped runs are not replayed');
});

test('a failed run is logged and the next one still happens', async (t) => {
  const h = harness(t, [entry('app', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  await h.advance(5000);
  await h.finish(new Error('server unreachable'));
  const failed = h.logs.find((l) => l.msg === 'backup failed');
  assert.equal(failed?.err, 'server unreachable');
  await h.advance(10_000);
  assert.deepEqual(h.started, ['app', 'app']);
});

test('reload replaces the entries: a removed entry no longer runs, a new one does', async (t) => {
  const h = harness(t, [entry('old', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  h.scheduler.reload([entry('new', '*/10 * * * * *')]);
  await h.advance(5000);
  assert.deepEqual(h.started, ['new']);
  await h.finish();
});

test('a schedule a year away fires at its time and not before', async (t) => {
  const h = harness(t, [entry('yearly', '0 0 0 1 1 *')], '2026-01-01T00:00:01.000Z');
  const wait = Date.parse('2027-01-01T00:00:00.000Z') - Date.parse('2026-01-01T00:00:01.000Z');
  // 2^31-1 ms is about 24.8 days: the wait is split; advance in steps below that.
  const step = 20 * 24 * 3600 * 1000;
  for (let done = 0; done + step < wait; done += step) await h.advance(step);
  assert.deepEqual(h.started, []);
  await h.advance(step);
  assert.deepEqual(h.started, ['yearly']);
  await h.finish();
});

test('stop waits for the backup in progress and nothing runs after it', async (t) => {
  const h = harness(t, [entry('app', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  await h.advance(5000);
  let stopped = false;
  const stopping = h.scheduler.stop().then(() => (stopped = true));
  await settle();
  assert.equal(stopped, false, 'stop waits while the backup runs');
  await h.finish();
  await stopping;
  assert.equal(stopped, true);
  await h.advance(60_000);
  assert.deepEqual(h.started, ['app']);
});

test('a clock set forward over many times runs the entry once, then on its schedule', async (t) => {
  // (A clock set back cannot be shown here: the mocked timers follow the mocked Date; see
  // test/integration/daemon-faults.test.ts, which moves a real daemon's clock with faketime.)
  const h = harness(t, [entry('app', '*/10 * * * * *')], '2026-01-01T00:00:05.000Z');
  t.mock.timers.setTime(Date.parse('2026-01-01T05:00:00.000Z'));
  await h.advance(5000);
  assert.deepEqual(h.started, ['app'], 'one run for all the times skipped over');
  await h.finish();
  await h.advance(4999);
  assert.deepEqual(h.started, ['app']);
  await h.advance(1);
  assert.deepEqual(h.started, ['app', 'app']);
  await h.finish();
});

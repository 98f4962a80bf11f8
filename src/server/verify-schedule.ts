import fs from 'node:fs';
import path from 'node:path';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { CronTimer } from '../schedule/cron-timer.js';
import type { ServerMetrics } from './metrics/server-metrics.js';
import type { Storage } from './storage.js';
import { archivesToVerify, verifyArchive } from './verify.js';
import { OddEntries } from './storage-entries.js';

/**
 * `server.verify.schedule`: the running server re-reads every archive of every storage on a cron
 * schedule, as `nbackup-server verify` does, one archive at a time. A bad archive is an error in
 * the log; the counts, and each bad archive, go to /metrics. A run still going when the next one
 * is due makes that one skip; an archive rotated away while the run goes is not counted as bad.
 * The times follow the wall clock as CronTimer keeps them: a clock set back reschedules from the
 * clock as it is now (one line), one set forward over several times runs once.
 */
export class VerifySchedule {
  private readonly timer: CronTimer;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly schedule: string,
    private readonly storages: ReadonlyMap<string, Storage>,
    private readonly metrics: ServerMetrics,
    private readonly log: Logger,
  ) {
    // Unref'd: the listener keeps the server alive, not the next verify.
    this.timer = new CronTimer(schedule, {
      onDue: () => this.due(),
      onSetBack: (next, was) => log.warn({ schedule, next: next.toISOString(), was: was.toISOString() }, 'the clock was set back; verify rescheduled'),
    }, { unref: true });
  }

  start(): void {
    this.timer.start();
  }

  /** Stops the timer, and the run under way after the archive it is reading (not waited for: it only reads). */
  stop(): void {
    this.stopped = true;
    this.timer.stop();
  }

  private due(): void {
    if (this.running) this.log.warn({ schedule: this.schedule }, 'scheduled verify skipped: the previous run is still going');
    else this.running = this.runOnce().finally(() => (this.running = null));
  }

  async runOnce(): Promise<void> {
    const started = Date.now();
    const ok = new Map<string, number>();
    const bad: { storage: string; archive: string }[] = [];
    this.log.info({ storages: [...this.storages.keys()] }, 'scheduled verify started');
    for (const storage of this.storages.values()) {
      let files: string[];
      try {
        const odd = new OddEntries();
        files = await archivesToVerify([storage], undefined, odd);
        if (odd.count > 0) this.log.warn({ storage: storage.name, ...odd.fields() }, 'scheduled verify skipped what is not an archive the server made');
      } catch (err) {
        this.log.error({ storage: storage.name, err: errorMessage(err) }, 'scheduled verify cannot list the storage');
        continue;
      }
      for (const file of files) {
        if (this.stopped) return;
        const archive = path.relative(storage.config.base_dir, file);
        try {
          const r = await verifyArchive(file);
          if (r.ok) ok.set(storage.name, (ok.get(storage.name) ?? 0) + 1);
          else if (fs.existsSync(file)) {
            bad.push({ storage: storage.name, archive });
            this.log.error({ storage: storage.name, archive, size: r.size, members: r.members, reason: r.detail }, 'archive failed verification');
          }
        } catch (err) {
          // Gone since it was listed (rotated): nothing to say. Anything else is a bad archive.
          if (!fs.existsSync(file)) continue;
          bad.push({ storage: storage.name, archive });
          this.log.error({ storage: storage.name, archive, reason: errorMessage(err) }, 'archive failed verification');
        }
      }
    }
    const seconds = (Date.now() - started) / 1000;
    const good = [...ok.values()].reduce((a, b) => a + b, 0);
    this.metrics.verified({ storages: [...this.storages.keys()], ok, bad, seconds });
    const fields = { ok: good, bad: bad.length, seconds };
    if (bad.length > 0) this.log.error(fields, 'scheduled verify finished: bad archives found');
    else this.log.info(fields, 'scheduled verify finished');
  }
}

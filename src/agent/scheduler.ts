import { CronExpressionParser } from 'cron-parser';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { BackupConfig } from '../config/index.js';

/**
 * Runs each backup entry on its cron schedule. Runs are serialised (one backup at a time: they
 * compete for the same CPUs and uplink); a tick that comes while the same entry is queued or
 * running is skipped with a log line rather than stacking up.
 */
const MAX_TIMER = 2 ** 31 - 1;

function nextRun(schedule: string, after: Date): Date {
  return CronExpressionParser.parse(schedule, { currentDate: after }).next().toDate();
}

export class Scheduler {
  private timers = new Map<string, NodeJS.Timeout>();
  private queue: BackupConfig[] = [];
  private running: Promise<void> | null = null;
  private runningName: string | null = null;
  private stopped = false;

  constructor(
    private entries: readonly BackupConfig[],
    private readonly run: (entry: BackupConfig) => Promise<void>,
    private readonly log: Logger,
  ) {}

  start(): void {
    for (const e of this.entries) this.arm(e);
  }

  /** Replaces the entries (SIGHUP); a backup already running finishes under the old settings. */
  reload(entries: readonly BackupConfig[]): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.entries = entries;
    const names = new Set(entries.map((e) => e.name));
    this.queue = this.queue.filter((q) => names.has(q.name)).map((q) => entries.find((e) => e.name === q.name)!);
    if (!this.stopped) this.start();
  }

  /** Stops scheduling; resolves when the backup in progress (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.queue = [];
    await this.running;
  }

  get busy(): boolean {
    return this.running !== null;
  }

  private arm(entry: BackupConfig, from = new Date()): void {
    if (this.stopped) return;
    let when = nextRun(entry.schedule, from);
    this.log.info({ backup: entry.name, next: when.toISOString() }, 'backup scheduled');
    const wait = (): void => {
      const now = Date.now();
      if (now < when.getTime()) {
        // Timers count real time, the schedule the wall clock. A clock set back since (NTP after a
        // wrong RTC) would otherwise hold every entry for as long as the step: the time comes
        // from the clock as it is now. (A timer a little early finds the same time again.)
        const again = nextRun(entry.schedule, new Date(now));
        if (again < when) {
          this.log.warn({ backup: entry.name, next: again.toISOString(), was: when.toISOString() }, 'the clock was set back; backup rescheduled');
          when = again;
        }
        this.timers.set(entry.name, setTimeout(wait, Math.min(MAX_TIMER, when.getTime() - now)));
        return;
      }
      this.enqueue(entry);
      // The next time after now: a clock set forward over several times runs the entry once.
      this.arm(entry, new Date(Math.max(now, when.getTime() + 1)));
    };
    wait();
  }

  private enqueue(entry: BackupConfig): void {
    if (this.runningName === entry.name || this.queue.some((q) => q.name === entry.name)) {
      this.log.warn({ backup: entry.name }, 'previous run still in progress; this run is skipped');
      return;
    }
    this.queue.push(entry);
    if (!this.running) this.running = this.drain();
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const entry = this.queue.shift()!;
      this.runningName = entry.name;
      try {
        await this.run(entry);
      } catch (err) {
        this.log.error({ backup: entry.name, err: errorMessage(err) }, 'backup failed');
      }
      this.runningName = null;
    }
    this.running = null;
  }
}

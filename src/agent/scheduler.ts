import { errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { BackupConfig } from '../config/index.js';
import { CronTimer } from '../schedule/cron-timer.js';

/**
 * Runs each backup entry on its cron schedule. Runs are serialised (one backup at a time: they
 * compete for the same CPUs and uplink); a tick that comes while the same entry is queued or
 * running is skipped with a log line rather than stacking up. Times follow the wall clock, steps
 * and all, as CronTimer keeps them.
 */

export class Scheduler {
  private timers = new Map<string, CronTimer>();
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
    for (const t of this.timers.values()) t.stop();
    this.timers.clear();
    this.entries = entries;
    const names = new Set(entries.map((e) => e.name));
    this.queue = this.queue.filter((q) => names.has(q.name)).map((q) => entries.find((e) => e.name === q.name)!);
    if (!this.stopped) this.start();
  }

  /** Stops scheduling; resolves when the backup in progress (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) t.stop();
    this.timers.clear();
    this.queue = [];
    await this.running;
  }

  get busy(): boolean {
    return this.running !== null;
  }

  private arm(entry: BackupConfig): void {
    if (this.stopped) return;
    const log = this.log;
    const timer = new CronTimer(entry.schedule, {
      onDue: () => this.enqueue(entry),
      onArmed: (next) => log.info({ backup: entry.name, next: next.toISOString() }, 'backup scheduled'),
      onSetBack: (next, was) => log.warn({ backup: entry.name, next: next.toISOString(), was: was.toISOString() }, 'the clock was set back; backup rescheduled'),
    });
    this.timers.set(entry.name, timer);
    timer.start();
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

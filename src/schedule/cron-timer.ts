import { CronExpressionParser } from 'cron-parser';
import { MAX_TIMER_MS } from '../timer-limit.js';

/**
 * A cron schedule on Node's timers, shared by the agent's backup entries and the server's
 * scheduled verify. Timers count real time, the schedule the wall clock, so every wake-up compares
 * the two:
 *   - the clock set back since the time was armed (NTP after a wrong hardware clock): the next time
 *     comes from the clock as it is now (`onSetBack`), rather than waiting out the whole step;
 *   - the clock set forward over several times: the schedule fires once, and the next time is the
 *     first one after now — no burst, nothing for each time stepped over.
 * A timer that wakes a little early finds the same time again and sleeps the rest.
 */
export interface CronTimerEvents {
  /** The schedule is due (once, however many times a forward step went over). */
  onDue: () => void;
  /** A time was armed: at start, and after each due time. */
  onArmed?: (next: Date) => void;
  /** The clock was found set back: `next` replaces the time `was` waited for. */
  onSetBack?: (next: Date, was: Date) => void;
}


/** The first time of `schedule` strictly after `after`. */
export function nextCronTime(schedule: string, after: Date): Date {
  return CronExpressionParser.parse(schedule, { currentDate: after }).next().toDate();
}

export class CronTimer {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  /** `unref`: the timer does not keep the process alive (something else does). */
  constructor(
    private readonly schedule: string,
    private readonly events: CronTimerEvents,
    private readonly opts: { unref?: boolean } = {},
  ) {}

  start(): void {
    this.stopped = false;
    this.arm(new Date());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(from: Date): void {
    if (this.stopped) return;
    let when = nextCronTime(this.schedule, from);
    this.events.onArmed?.(when);
    const wake = (): void => {
      this.timer = null;
      if (this.stopped) return;
      const now = Date.now();
      if (now < when.getTime()) {
        const again = nextCronTime(this.schedule, new Date(now));
        if (again < when) {
          this.events.onSetBack?.(again, when);
          when = again;
        }
        this.timer = setTimeout(wake, Math.min(MAX_TIMER_MS, when.getTime() - now));
        if (this.opts.unref) this.timer.unref();
        return;
      }
      this.events.onDue();
      // The next time after now (not after `when`): a clock set forward over several times is due once.
      this.arm(new Date(Math.max(now, when.getTime() + 1)));
    };
    wake();
  }
}

import { NbackupError } from '../errors.js';

/**
 * Keeps a storage's filesystem above its reserve (`min_free`) while sessions write to it: every
 * write asks for its bytes first, and a write that would cross the reserve is refused with
 * NoSpaceError, so a session stops before the disk fills up instead of failing on ENOSPC (or
 * filling it for everyone else). Free space is read again every second, and whenever the writes
 * granted since the last reading reach half of the room that was left then, so the checks are
 * rare on a roomy disk and frequent near the reserve. One guard per storage: every session on it
 * draws from the same reading.
 */
export class NoSpaceError extends NbackupError {
  constructor(message: string) {
    super('storage', message);
    this.name = 'NoSpaceError';
  }
}

const RECHECK_MS = 1000;
const MiB = 1024 * 1024;

export class SpaceGuard {
  private free = 0;
  private readAt = 0;
  /** Claimed since the last reading. */
  private granted = 0;
  /** Claimed and not yet written: a reading may not show them yet. */
  private inFlight = 0;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly storageName: string,
    private readonly reserve: number,
    private readonly readFree: () => Promise<number>,
  ) {}

  /**
   * Resolves when `bytes` may be written (call `written` once they are); rejects with NoSpaceError
   * when they would cross the reserve.
   */
  async claim(bytes: number): Promise<void> {
    const room = this.free - this.reserve;
    if (Date.now() - this.readAt > RECHECK_MS || this.granted + bytes > room / 2) await this.refresh();
    if (this.free - this.granted - bytes < this.reserve) {
      const free = this.free - this.granted;
      throw new NoSpaceError(
        `storage "${this.storageName}" is out of space: ${(free / MiB).toFixed(1)} MiB free, and writing ${(bytes / MiB).toFixed(1)} MiB more would cross its reserve (min_free) of ${(this.reserve / MiB).toFixed(1)} MiB`,
      );
    }
    this.granted += bytes;
    this.inFlight += bytes;
  }

  /** The write of `bytes` claimed earlier is done (or failed). */
  written(bytes: number): void {
    this.inFlight = Math.max(0, this.inFlight - bytes);
  }

  private async refresh(): Promise<void> {
    // Concurrent claims share one reading.
    this.reading ??= this.readFree().then(
      (free) => {
        this.free = free;
        this.readAt = Date.now();
        this.granted = this.inFlight;
        this.reading = null;
      },
      (err: unknown) => {
        this.reading = null;
        throw err;
      },
    );
    await this.reading;
  }
}

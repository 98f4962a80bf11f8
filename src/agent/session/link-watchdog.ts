import type { Socket } from 'node:net';
import { NbackupError } from '../../errors.js';

/**
 * Declares a connection dead when it owes the server something (unacknowledged bytes, or the Final
 * ACK) and nothing has moved for `read_timeout`: no acknowledgement, and, where asked, no byte
 * leaving the socket's send buffer. A half-open link never errors by itself; this destroys the
 * socket with a timeout error so the sender reconnects. Time is performance.now(): a wall clock
 * set back must not hide a dead link for the length of the step, nor one set forward cut a live one.
 */
export interface WatchdogOptions {
  readTimeoutMs: number;
  /** Whether the connection is waiting for the server right now. */
  owed: () => boolean;
  /** Count bytes leaving the send buffer as progress (a slow but live link keeps its connection). */
  countSendProgress?: boolean;
  /** When progress was last seen elsewhere in the session (another stream's acknowledgement), performance.now() ms. */
  sharedProgress?: () => number;
  /** The message of the timeout error. */
  message: string;
}

export class LinkWatchdog {
  private lastProgress = performance.now();
  private lastFlushed = -1;
  private readonly timer: NodeJS.Timeout;
  private failure: NbackupError | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly opts: WatchdogOptions,
  ) {
    this.timer = setInterval(() => this.check(), Math.min(1000, Math.max(50, opts.readTimeoutMs / 4)));
  }

  /** The error the connection was destroyed with, if the watchdog fired. */
  get error(): NbackupError | null {
    return this.failure;
  }

  /** An acknowledgement arrived. */
  heard(): void {
    this.lastProgress = performance.now();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    const now = performance.now();
    if (this.opts.countSendProgress) {
      const flushed = this.socket.bytesWritten - this.socket.writableLength;
      if (flushed !== this.lastFlushed) {
        this.lastFlushed = flushed;
        this.lastProgress = now;
      }
    }
    if (!this.opts.owed()) {
      this.lastProgress = now;
      return;
    }
    const quiet = now - Math.max(this.lastProgress, this.opts.sharedProgress?.() ?? 0);
    if (quiet > this.opts.readTimeoutMs && !this.failure) {
      this.failure = new NbackupError('timeout', this.opts.message);
      this.socket.destroy(this.failure);
    }
  }
}

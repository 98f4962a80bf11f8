/**
 * `--progress`: one status line on stderr, redrawn in place on a terminal and printed every few
 * seconds otherwise, with throughput, bytes acknowledged by the server and retries.
 */
export interface ProgressSample {
  sent: number;
  acked: number;
  produced: number;
  done: boolean;
  retries?: number;
}

const MiB = 1024 * 1024;

export class ProgressReporter {
  private readonly started = Date.now();
  private last = 0;
  private lastLine = '';

  constructor(
    private readonly name: string,
    private readonly out: NodeJS.WriteStream,
  ) {}

  update(p: ProgressSample): void {
    const now = Date.now();
    const every = this.out.isTTY ? 250 : 5000;
    if (now - this.last < every && !p.done) return;
    this.last = now;
    const secs = Math.max((now - this.started) / 1000, 0.001);
    this.lastLine =
      `[${this.name}] sent ${(p.sent / MiB).toFixed(1)} MiB (${(p.sent / MiB / secs).toFixed(1)} MiB/s), ` +
      `acked ${(p.acked / MiB).toFixed(1)} MiB, compressed ${(p.produced / MiB).toFixed(1)} MiB, ` +
      `retries ${p.retries ?? 0}, ${secs.toFixed(0)}s`;
    this.out.write(this.out.isTTY ? `\r\x1b[K${this.lastLine}` : `${this.lastLine}\n`);
  }

  finish(status: string): void {
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    this.out.write(`${this.out.isTTY ? '\r\x1b[K' : ''}[${this.name}] ${status} in ${secs}s\n`);
  }
}

/**
 * `--progress`: one live status line per backup entry on stderr. On a terminal it is redrawn in
 * place (4 times a second) and log lines are written around it (clear, log, redraw: see
 * `around`), so they never tear it; otherwise it is printed as a plain line every 5 s. The line
 * shows the bytes read (tar) and sent, MB/s, files/s, percent and ETA against an estimate (a size
 * pre-scan that runs beside the backup, see size-estimate.ts), retries and streams; a summary
 * line closes it.
 */
export interface ProgressSample {
  /** Body bytes written to sockets (resends included). */
  sent: number;
  /** Bytes the server acknowledged. */
  acked: number;
  /** Compressed bytes produced. */
  produced: number;
  /** Tar bytes read from the sources so far. */
  read?: number;
  /** Regular files archived so far. */
  files?: number;
  /** Data streams connected now. */
  streams?: number;
  done: boolean;
  retries?: number;
}

const MB = 1e6;
const TTY_EVERY_MS = 250;
const PLAIN_EVERY_MS = 5000;

export class ProgressReporter {
  private readonly started = Date.now();
  private last = 0;
  private line = '';
  private sample: ProgressSample | null = null;
  /** Tar bytes the backup is expected to read, once the pre-scan has finished. */
  private expected: number | null = null;

  constructor(
    private readonly name: string,
    private readonly out: NodeJS.WriteStream,
  ) {}

  private get tty(): boolean {
    return this.out.isTTY === true;
  }

  /** The pre-scan's estimate of the tar bytes (ETA and percent appear from then on). */
  estimate(bytes: number): void {
    this.expected = bytes;
  }

  update(p: ProgressSample): void {
    this.sample = p;
    const now = Date.now();
    if (now - this.last < (this.tty ? TTY_EVERY_MS : PLAIN_EVERY_MS)) return;
    this.last = now;
    this.line = this.render(p, now);
    this.out.write(this.tty ? `\r\x1b[2K${this.line}` : `${this.line}\n`);
  }

  /** Runs `write` (a log line on the same terminal) with the bar cleared, then redraws the bar. */
  around(write: () => void): void {
    if (!this.tty || this.line === '') return write();
    this.out.write('\r\x1b[2K');
    write();
    this.out.write(this.line);
  }

  /** The summary line; the live line is gone after it. */
  finish(status: string): void {
    const secs = Math.max((Date.now() - this.started) / 1000, 0.001);
    const p = this.sample;
    const figures = p
      ? ` (${mb(p.read ?? 0)} read, ${mb(p.sent)} sent, ${p.files ?? 0} files, ${((p.read ?? 0) / MB / secs).toFixed(1)} MB/s, ` +
        `${Math.round((p.files ?? 0) / secs)} files/s, retries ${p.retries ?? 0})`
      : '';
    this.line = '';
    this.out.write(`${this.tty ? '\r\x1b[2K' : ''}[${this.name}] ${status} in ${secs.toFixed(1)}s${figures}\n`);
  }

  private render(p: ProgressSample, now: number): string {
    const secs = Math.max((now - this.started) / 1000, 0.001);
    const read = p.read ?? 0;
    const rate = read / secs;
    let percent = '--%';
    let eta = 'ETA --:--';
    if (this.expected !== null && this.expected > 0 && read > 0) {
      // Done is when the server has it all: the compressed total is guessed from the ratio so far,
      // and the slower of reading and acknowledging sets the percent and the ETA.
      const expectedOut = Math.max(1, (this.expected * p.produced) / read);
      const share = Math.min(read / this.expected, p.acked / expectedOut, 0.999);
      percent = `${Math.floor(share * 100)}%`;
      const ackRate = p.acked / secs;
      const left = Math.max(rate > 0 ? (this.expected - read) / rate : Infinity, ackRate > 0 ? (expectedOut - p.acked) / ackRate : Infinity);
      if (Number.isFinite(left)) eta = `ETA ${clock(Math.max(0, left))}`;
    }
    return (
      `[${this.name}] ${percent} read ${mb(read)}${this.expected !== null ? ` of ${mb(this.expected)}` : ''} · sent ${mb(p.sent)} · ` +
      `${(rate / MB).toFixed(1)} MB/s · ${Math.round((p.files ?? 0) / secs)} files/s · ${eta} · ` +
      `streams ${p.streams ?? 1} · retries ${p.retries ?? 0}`
    );
  }
}

function mb(bytes: number): string {
  return `${(bytes / MB).toFixed(1)} MB`;
}

function clock(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

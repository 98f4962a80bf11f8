import { exitCodeForSignal, type StopSignal } from '../../exit-codes.js';
import { catchStopSignals } from '../stop-signals.js';
import type { Extractor } from './extract.js';

/**
 * SIGINT or SIGTERM during `restore --to`: the file being written is removed (a file is in the
 * target only whole, as after a failed write), one line says how far the restore got, and the
 * process exits 130 or 143 (128 + the signal's number, what a shell shows for a command a signal
 * ended). The extractor writes synchronously, so the handler runs between two writes, never in one.
 */
export class RestoreInterrupt {
  private extractor: Extractor | null = null;
  private readonly release: () => void;

  constructor(
    private readonly dir: string,
    private readonly say: (line: string) => void,
  ) {
    this.release = catchStopSignals((signal) => this.stop(signal));
  }

  /** The extractor writing into the target, once there is one. */
  watch(extractor: Extractor): void {
    this.extractor = extractor;
  }

  /** Signals get their default action again. */
  remove(): void {
    this.release();
  }

  private stop(signal: StopSignal): never {
    const x = this.extractor;
    if (!x) {
      this.say(`restore interrupted by ${signal} before anything was written into ${this.dir}`);
    } else {
      const s = x.stats;
      const left = x.abandon();
      const file = !left ? 'no file was half-written' : left.removed ? `${left.name}, being written, was removed` : `${left.name}, being written, could not be removed: it is incomplete`;
      const there = s.alreadyThere ? ` (${s.alreadyThere} members already there)` : '';
      this.say(`restore interrupted by ${signal}: ${s.files} files restored into ${this.dir}${there}; ${file}; the same command restores the rest`);
    }
    process.exit(exitCodeForSignal(signal));
  }
}

import os from 'node:os';
import { NbackupError, type ErrorKind } from './errors.js';

/**
 * The one table from an error's kind to a process exit status, shared by both commands. `--help`
 * prints it (exitCodeHelp) and the README repeats it.
 */
export interface ExitCode {
  code: number;
  meaning: string;
  kinds: readonly ErrorKind[];
}

export const EXIT_CODES: readonly ExitCode[] = [
  { code: 0, meaning: 'success (--once: every backup entry committed; restore: every member restored, or already there as in the archive)', kinds: [] },
  {
    code: 1,
    meaning: 'a backup, a health check, a storage, a restore or a find failed (an archive that cannot be read; find: nothing matched); stderr says which and why, one line each',
    kinds: ['source', 'rejected', 'server', 'checksum', 'storage', 'protocol', 'aborted', 'hook'],
  },
  { code: 2, meaning: 'bad command line or configuration file', kinds: ['usage', 'config'] },
  { code: 3, meaning: 'a certificate or key cannot be used', kinds: ['tls'] },
  { code: 4, meaning: 'the server cannot be reached or did not answer in time', kinds: ['network', 'timeout'] },
  { code: 70, meaning: 'internal error (a bug: please report it)', kinds: ['internal'] },
  { code: 130, meaning: 'restore --to interrupted by SIGINT (Ctrl-C): the file being written is removed; stderr says how many were restored. --once: the running backup is dropped on the server', kinds: [] },
  { code: 143, meaning: 'restore --to or --once interrupted by SIGTERM: likewise', kinds: [] },
];

/** The signals a restore or a --once run stops at, with a status of its own (128 + the signal's number, as shells report it). */
export type StopSignal = 'SIGINT' | 'SIGTERM';

export function exitCodeForSignal(signal: StopSignal): number {
  return 128 + os.constants.signals[signal];
}

/** Exit status of a `--once` run in which at least one entry failed, whatever the kinds. */
export const EXIT_BACKUP_FAILED = 1;
export const EXIT_USAGE = 2;
const EXIT_INTERNAL = 70;

/** The exit status for an error that ends the command. */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof NbackupError)) return EXIT_INTERNAL;
  return EXIT_CODES.find((e) => e.kinds.includes(err.kind))?.code ?? EXIT_INTERNAL;
}

/** The table as text for `--help`. */
export function exitCodeHelp(): string {
  return ['Exit status:', ...EXIT_CODES.map((e) => `  ${String(e.code).padStart(2)}  ${e.meaning}`)].join('\n');
}

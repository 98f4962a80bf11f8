import { FinalStatus, statusName } from '../../../protocol/constants.js';
import type { FinalAck } from '../../../protocol/frames.js';
import { NbackupError, type ErrorKind } from '../../errors.js';

/**
 * The server's Final ACK as the outcome of a run: null when the backup is committed, else an error
 * whose kind says what went wrong and whose message carries the server's reason (version 3).
 * None of these is retryable: a new session would meet the same disk and the same data.
 */
export function failureOf(f: FinalAck): NbackupError | null {
  if (f.status === FinalStatus.OK) return null;
  const kinds: Partial<Record<FinalStatus, ErrorKind>> = { [FinalStatus.CHECKSUM_MISMATCH]: 'checksum', [FinalStatus.NO_SPACE]: 'storage' };
  const why = f.message ? ` (${f.message})` : '';
  return new NbackupError(kinds[f.status] ?? 'server', `server did not commit the backup: ${statusName(FinalStatus, f.status)}${why}`);
}

import { FinalStatus, statusName } from '../../../protocol/constants.js';
import { decodeTrailer, type FinalAck } from '../../../protocol/frames.js';
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

/**
 * A resume found the session already committed (its Final ACK was lost on the way): the backup
 * is done if what the server committed is what this run produced, size and SHA-256.
 */
export function committedAnswer(trailer: Buffer | null, committed: { size: number; sha256: Buffer }): FinalAck {
  const ours = trailer ? decodeTrailer(trailer)?.value : null;
  if (!ours) throw new NbackupError('protocol', 'the server says the session is committed, but this run has not sent its trailer');
  if (ours.size !== committed.size || !ours.sha256.equals(committed.sha256)) {
    throw new NbackupError(
      'checksum',
      `the server committed ${committed.size} bytes with SHA-256 ${committed.sha256.toString('hex')}, but this run produced ${ours.size} bytes with ${ours.sha256.toString('hex')}`,
    );
  }
  return { status: FinalStatus.OK, message: 'committed (the first answer was lost; the resume confirmed size and SHA-256)' };
}

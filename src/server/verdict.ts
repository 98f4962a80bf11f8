import type { Trailer } from '../../protocol/frames.js';

/**
 * The one check every session ends with, single-stream or parallel: the data written to the
 * temporary file must have exactly the trailer's size and SHA-256. The hash was computed inline as
 * the bytes were written, so the file is never read back.
 */
export type Verdict = { ok: true; dataSize: number; sha256: string } | { ok: false; reason: string };

export function judge(trailer: Trailer, written: number, digest: Buffer): Verdict {
  if (trailer.size !== written) {
    return { ok: false, reason: `trailer announces ${trailer.size} bytes but ${written} arrived` };
  }
  if (!digest.equals(trailer.sha256)) {
    return {
      ok: false,
      reason: `SHA-256 mismatch: received data hashes to ${digest.toString('hex')}, trailer says ${trailer.sha256.toString('hex')}`,
    };
  }
  return { ok: true, dataSize: written, sha256: digest.toString('hex') };
}

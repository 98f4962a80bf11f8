import fs from 'node:fs';
import path from 'node:path';
import { NbackupError, errnoCode, errorMessage } from '../../errors.js';

/**
 * The folder a restore writes into, and the faults of the disk under it. A target that cannot be
 * a folder (a file on its way) is a mistake on the command line; one that cannot be written
 * (read-only, full, over quota, failing) ends the restore with one line, since no member after
 * the first one to hit it could be written either.
 */

const DISK_FAULTS: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
};

const DENIED: Readonly<Record<string, string>> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

/** Why the disk takes no more writes at all, or null when `err` concerns one entry. */
export function diskFault(err: unknown): string | null {
  const code = errnoCode(err);
  return code !== undefined && Object.hasOwn(DISK_FAULTS, code) ? DISK_FAULTS[code] : null;
}

/** The nearest of `dir` and its parents that exists (null stats when none does). */
function nearestExisting(dir: string): { at: string; st: fs.Stats | null } {
  // Each step goes one folder up, so the walk ends at "/" at the latest.
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      return { at, st: fs.statSync(at) };
    } catch (err) {
      const code = errnoCode(err);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
    }
    if (path.dirname(at) === at) return { at, st: null };
  }
}

/**
 * Makes the target folder `dir` (absolute) and the folders above it when missing; returns its real
 * path. Throws, naming the path at fault, when something on its way is not a folder (`usage`) or
 * it cannot be written (`storage`).
 */
export function openTarget(dir: string): string {
  const cannot = (kind: 'usage' | 'storage', why: string): NbackupError => new NbackupError(kind, `cannot restore into ${dir}: ${why}`);
  const reason = (err: unknown): string => {
    const code = errnoCode(err);
    return diskFault(err) ?? (code !== undefined && Object.hasOwn(DENIED, code) ? DENIED[code] : errorMessage(err));
  };
  const { at, st } = nearestExisting(dir);
  if (st && !st.isDirectory()) throw cannot('usage', `${at} is not a folder`);
  try {
    fs.accessSync(at, fs.constants.W_OK);
    fs.mkdirSync(dir, { recursive: true });
    return fs.realpathSync(dir);
  } catch (err) {
    throw cannot('storage', `${at} cannot be written: ${reason(err)}`);
  }
}

import { formatDuration } from '../config/index.js';
import { NbackupError } from '../errors.js';

/** How long one run of a backup entry may take before it is stopped. */
const RUN_LIMIT_MS = 24 * 3600 * 1000;

/**
 * An abort signal that fires when a run exceeds its limit, with a reason that says so. Its kind is
 * 'aborted', not 'timeout': a retry cannot cure it.
 */
export function runLimit(entry: string, limitMs = RUN_LIMIT_MS): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(new NbackupError('aborted', `backup "${entry}" was stopped: it ran longer than its run limit of ${formatDuration(limitMs)}`));
  }, limitMs);
  timer.unref();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

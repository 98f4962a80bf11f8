import { formatDuration } from '../config/index.js';
import { NbackupError } from '../errors.js';

/**
 * An abort signal for one attempt of a backup: it fires when the attempt runs past `limitMs`
 * (with a reason that says so: kind 'aborted', which no retry can cure), or when `parent` fires
 * (a stopping daemon), with the parent's reason.
 */
export function runLimit(entry: string, limitMs: number, parent?: AbortSignal): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(new NbackupError('aborted', `backup "${entry}" was stopped: it ran longer than its run limit of ${formatDuration(limitMs)}`));
  }, limitMs);
  timer.unref();
  const onParent = (): void => controller.abort(parent!.reason);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: controller.signal,
    clear: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}

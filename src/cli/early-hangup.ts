/**
 * SIGHUP from the process's first moment. Node.js starts with no handler, and SIGHUP's default
 * action ends the process; the daemon installs its reload handler only once its modules are loaded
 * and its configuration read, a quarter of a second or more after exec. A `systemctl reload` in
 * that window (a configuration tool that restarts and then reloads) used to kill the daemon, and
 * systemd counts a death by SIGHUP as a clean exit, so it was not restarted.
 *
 * The server, which reopens its log on SIGHUP, had the same window, longer (a bigger bundle).
 *
 * This module is the first one each entry point imports: it only notes that a SIGHUP came. The
 * agent's daemon and the serving server take over (`takeEarlyHangup`) and act once if one did;
 * every other command gives SIGHUP back its default action (`releaseEarlyHangup`), raised again
 * if one came meanwhile.
 */
let pending = false;
let installed = true;
const note = (): void => {
  pending = true;
};
process.on('SIGHUP', note);

/** Removes the start-up handler; true when a SIGHUP arrived while it was installed. */
export function takeEarlyHangup(): boolean {
  if (installed) process.off('SIGHUP', note);
  installed = false;
  const came = pending;
  pending = false;
  return came;
}

/** For commands that do not reload: SIGHUP ends the process again, at once if one already came. */
export function releaseEarlyHangup(): void {
  if (takeEarlyHangup() && process.listenerCount('SIGHUP') === 0) process.kill(process.pid, 'SIGHUP');
}

/**
 * A real clock offset for a child process: libfaketime preloaded into it (Debian's `faketime`
 * package). Preloading into the process itself, rather than through the `faketime` command (which
 * forks), keeps the child's pid the one the test signals and waits for.
 */
import { existsSync } from 'node:fs';

const CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/faketime/libfaketime.so.1',
];

/** Environment that shifts the child's wall clock by `offset` (e.g. "-400d"); timers keep real time. */
export function faketimeEnv(offset: string): Record<string, string> {
  const lib = CANDIDATES.find((p) => existsSync(p));
  if (!lib) throw new Error(`libfaketime is not installed (looked for ${CANDIDATES.join(', ')}); apt-get install faketime`);
  return { LD_PRELOAD: lib, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' };
}

/**
 * Environment for a child whose clock the test moves while it runs: the offset is read from
 * `file` at every call (write "+0", then "-1h", …); timers keep real time.
 */
export function faketimeFileEnv(file: string): Record<string, string> {
  const { LD_PRELOAD, FAKETIME_DONT_FAKE_MONOTONIC, FAKETIME_NO_CACHE } = faketimeEnv('+0');
  return { LD_PRELOAD, FAKETIME_TIMESTAMP_FILE: file, FAKETIME_DONT_FAKE_MONOTONIC, FAKETIME_NO_CACHE };
}

/**
 * A FIFO as a configuration file: the process under test opens it and waits there, inside its
 * start-up, until the test writes the text. Lets a test act at that moment without a sleep.
 */
import fs from 'node:fs';
import type { LoggedProcess } from './proc.js';
import { waitUntilAsync } from './wait.js';

/** Opens the write end of the FIFO `path` once `p` has opened it to read (ENXIO until then). */
export async function writerOnceRead(path: string, p: LoggedProcess, timeoutMs = 15_000): Promise<number> {
  let fd = -1;
  await waitUntilAsync(
    async () => {
      try {
        fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
        if (p.proc.exitCode !== null || p.proc.signalCode !== null) throw new Error(`exited before it opened ${path}\n${p.output().slice(-20).join('\n')}`);
        return false;
      }
    },
    timeoutMs,
    `${path} to be opened for reading`,
    () => p.output().slice(-20).join('\n'),
  );
  return fd;
}

/** Writes `text` to the FIFO's write end `fd` (a configuration fits the pipe's buffer) and closes it. */
export function writeAndClose(fd: number, text: string): void {
  try {
    fs.writeSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
}

import { isDeepStrictEqual } from 'node:util';
import { loadServerConfig, type ServerConfig } from '../config/index.js';
import { errorMessage } from '../errors.js';
import { reconfigureLogger, type Logger } from '../log/logger.js';

/**
 * SIGHUP to the server: server.yaml is read and checked again and its `logging` section applied:
 * level, format, and logging.file opened anew, which is how logrotate's rename is followed. The
 * rest (listener, TLS, storages, limits) does not change under running sessions: a section that
 * now differs from the one the server started with is named in a warning, to take effect at the
 * next restart. A file that no longer loads, or a log file that cannot be opened, changes nothing.
 * Of SIGHUPs that overlap, only the latest is applied.
 */
export function hangupHandler(configPath: string, running: ServerConfig, log: Logger, stopping: () => boolean): () => void {
  let latest = 0;
  return () => {
    if (stopping()) {
      log.info('SIGHUP ignored: the server is stopping');
      return;
    }
    const ticket = ++latest;
    loadServerConfig(configPath)
      .then((next) => {
        if (ticket !== latest || stopping()) return;
        reconfigureLogger(log, next.logging, configPath);
        log.info({ logging: next.logging }, 'SIGHUP: logging settings applied, log file reopened');
        const later = (Object.keys(next) as (keyof ServerConfig)[]).filter((k) => k !== 'logging' && !isDeepStrictEqual(next[k], running[k]));
        if (later.length > 0) {
          log.warn({ sections: later }, `${configPath} changed in ${later.join(', ')}: applied when the server restarts (systemctl restart nbackup-server)`);
        }
      })
      .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'SIGHUP: nothing changed'));
  };
}

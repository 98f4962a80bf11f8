import tls from 'node:tls';
import { NbackupError, errnoCode, errorMessage } from '../errors.js';
import { clientTlsOptions, type TlsMaterial } from '../tls/material.js';

/**
 * Opens an mTLS 1.3 connection to the server, failing with a message an operator can act on.
 * `signal` ends the attempt at once (with its reason): a daemon told to stop does not wait out
 * `connect_timeout` on a server that accepts connections but never answers.
 */
export function connectServer(server: { host: string; port: number }, material: TlsMaterial, timeoutMs: number, signal?: AbortSignal): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const socket = tls.connect({ ...clientTlsOptions(material, server.host), port: server.port });
    const where = `${server.host}:${server.port}`;
    const settle = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const timer = setTimeout(() => {
      settle();
      socket.destroy();
      reject(new NbackupError('timeout', `connecting to ${where} timed out after ${Math.round(timeoutMs / 1000)}s`));
    }, timeoutMs);
    const onAbort = (): void => {
      settle();
      socket.destroy();
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('secureConnect', () => {
      settle();
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (err: Error): void => {
      settle();
      socket.destroy();
      const code = errnoCode(err) ?? '';
      if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL|alert/i.test(code + ' ' + err.message)) {
        reject(new NbackupError('tls', `TLS handshake with ${where} failed: ${errorMessage(err)}`, { cause: err }));
      } else {
        reject(new NbackupError('network', `cannot connect to ${where}: ${errorMessage(err)}`, { cause: err }));
      }
    };
    socket.once('error', onError);
  });
}

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { NbackupError, errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import type { Storage } from '../storage.js';
import type { ServerMetrics } from './server-metrics.js';

/**
 * The optional HTTP listener (`server.metrics`, off by default, loopback by default):
 * `GET /metrics` in Prometheus' text format and `GET /healthz`, 200 when every storage can be
 * used and is above its reserve, 503 otherwise, with a JSON body that names each storage.
 * Nothing else is served; it takes no input but the path.
 */
export async function startMetricsHttp(
  listen: { host: string; port: number; address: string },
  metrics: ServerMetrics,
  storages: ReadonlyMap<string, Storage>,
  log: Logger,
): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    void respond(req, res, metrics, storages).catch((err: unknown) => {
      log.warn({ err: errorMessage(err), path: req.url }, 'metrics request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  // A scraper or two, not a crowd: more connections are closed as soon as they are accepted.
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(new NbackupError('network', `cannot listen for metrics on ${listen.address}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ host: listen.host, port }, 'metrics listening (/metrics, /healthz)');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function respond(req: http.IncomingMessage, res: http.ServerResponse, metrics: ServerMetrics, storages: ReadonlyMap<string, Storage>): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/metrics') {
    const body = await metrics.registry.metrics();
    res.writeHead(200, { 'content-type': metrics.registry.contentType });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/healthz') {
    const report: Record<string, { ok: boolean; freeBytes?: number; minFree: number; problem?: string }> = {};
    let ok = true;
    for (const s of storages.values()) {
      try {
        const free = await s.freeBytes();
        const enough = free >= s.config.min_free;
        report[s.name] = { ok: enough, freeBytes: free, minFree: s.config.min_free, ...(enough ? {} : { problem: 'below its min_free reserve' }) };
        ok &&= enough;
      } catch (err) {
        report[s.name] = { ok: false, minFree: s.config.min_free, problem: errorMessage(err) };
        ok = false;
      }
    }
    res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
    res.end(req.method === 'HEAD' ? undefined : `${JSON.stringify({ status: ok ? 'ok' : 'degraded', storages: report })}\n`);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found: try /metrics or /healthz\n');
}

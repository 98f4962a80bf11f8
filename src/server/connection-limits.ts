import type net from 'node:net';
import type tls from 'node:tls';
import { errnoCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { peerName } from './context.js';
import type { RefusalReason, ServerMetrics } from './metrics/server-metrics.js';

/** server.max_connections, max_handshakes_per_address, max_connections_per_agent. */
export interface ConnectionLimitsConfig {
  max_connections: number;
  max_handshakes_per_address: number;
  max_connections_per_agent: number;
}

/**
 * A refusal is logged once per window for each address and error, and at most LOG_LINES_PER_WINDOW
 * times per window for each reason; the others are counted, and the next line says how many.
 */
const LOG_WINDOW_MS = 10_000;
const LOG_LINES_PER_WINDOW = 10;

interface LogWindow {
  start: number;
  /** The address and error of each line logged in this window. */
  logged: Set<string>;
  /** Refusals not logged since the last line. */
  unlogged: number;
}

/**
 * How many connections the server holds, so that no peer can take them all:
 *
 * - every TCP connection, handshaking or served: `max_connections` (Node's own
 *   `net.Server.maxConnections`, which closes the ones over it as soon as they are accepted);
 * - connections from one address still in their TLS handshake: `max_handshakes_per_address`. A
 *   peer with no certificate can hold nothing else, and only until `handshake_timeout`, after
 *   which the connection is destroyed (Node only reports the timeout: it leaves the socket open);
 * - connections of one agent (its certificate's CN) at once: `max_connections_per_agent`.
 *
 * A refused connection is closed without an answer and counted in
 * `nbackup_connections_refused_total{reason}`; its log line is written once per address and error,
 * and at most ten times per reason, in 10 s, so a peer cannot flood the log either.
 */
export class ConnectionLimits {
  /** Open TCP connections per remote address (Map entries go with their last connection). */
  private readonly open = new Map<string, number>();
  /** Of those, the ones whose TLS handshake is done. */
  private readonly secured = new Map<string, number>();
  private readonly perAgent = new Map<string, number>();
  private readonly logWindows = new Map<RefusalReason, LogWindow>();
  /** Connections handshaking() closed whose TLS socket has not reported it yet. */
  private closedUnwrapped = 0;

  constructor(
    private readonly limits: ConnectionLimitsConfig,
    private readonly log: Logger,
    private readonly metrics: ServerMetrics,
  ) {}

  /** Applies the limits to `server`; call before it listens. */
  attach(server: tls.Server): void {
    server.maxConnections = this.limits.max_connections;
    server.on('drop', (data?: net.DropArgument) =>
      this.refused('max_connections', { remote: data?.remoteAddress, limit: this.limits.max_connections }, 'connection refused: the server holds max_connections connections'),
    );
    server.on('connection', (socket: net.Socket) => this.handshaking(socket));
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      socket.destroy();
      // The connections closed in handshaking() end here too, as a hang-up: already counted.
      const code = errnoCode(err);
      if ((code === 'ECONNRESET' || code === 'EPIPE') && this.closedUnwrapped > 0) this.closedUnwrapped--;
      else this.refused('tls_handshake', { remote: socket.remoteAddress, err: err.message }, 'TLS handshake refused');
    });
  }

  /**
   * Takes a connection whose TLS handshake is done. Returns false (and destroys it) when its agent
   * already holds max_connections_per_agent connections.
   */
  admit(socket: tls.TLSSocket): boolean {
    const address = socket.remoteAddress ?? '';
    count(this.secured, address, +1);
    socket.once('close', () => count(this.secured, address, -1));
    const agent = peerName(socket) ?? '';
    const limit = this.limits.max_connections_per_agent;
    if ((this.perAgent.get(agent) ?? 0) >= limit) {
      this.refused('max_connections_per_agent', { agent, remote: address, limit }, 'connection refused: this agent holds max_connections_per_agent connections');
      socket.destroy();
      return false;
    }
    count(this.perAgent, agent, +1);
    socket.once('close', () => count(this.perAgent, agent, -1));
    return true;
  }

  /** A TCP connection was accepted: refused when its address has too many handshakes under way. */
  private handshaking(socket: net.Socket): void {
    const address = socket.remoteAddress ?? '';
    const limit = this.limits.max_handshakes_per_address;
    if ((this.open.get(address) ?? 0) - (this.secured.get(address) ?? 0) >= limit) {
      this.refused('max_handshakes_per_address', { remote: address, limit }, 'connection refused: this address has max_handshakes_per_address TLS handshakes under way');
      this.closedUnwrapped++;
      socket.destroy();
      return;
    }
    count(this.open, address, +1);
    socket.once('close', () => count(this.open, address, -1));
  }

  private refused(reason: RefusalReason, fields: { remote?: string } & Record<string, unknown>, msg: string): void {
    this.metrics.refused(reason);
    const now = Date.now();
    let w = this.logWindows.get(reason);
    if (!w || now - w.start >= LOG_WINDOW_MS) {
      w = { start: now, logged: new Set(), unlogged: w?.unlogged ?? 0 };
      this.logWindows.set(reason, w);
    }
    // The same peer failing the same way is one line; another failure of it is news.
    const key = `${fields.remote ?? ''} ${String(fields.err ?? '')}`;
    if (w.logged.has(key) || w.logged.size >= LOG_LINES_PER_WINDOW) {
      w.unlogged++;
      return;
    }
    w.logged.add(key);
    this.log.warn(w.unlogged > 0 ? { ...fields, alsoRefusedSinceLastLine: w.unlogged } : fields, msg);
    w.unlogged = 0;
  }
}

function count(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

import type tls from 'node:tls';
import type { ServerConfig } from '../config/index.js';
import type { Logger } from '../log/logger.js';
import type { FrameSocket } from '../net/frame-socket.js';
import type { AdmissionGate } from './control/admission-gate.js';
import type { ControlHub } from './control/control-hub.js';
import type { ServerMetrics } from './metrics/server-metrics.js';
import type { SessionRegistry } from './registry.js';
import type { Storage } from './storage.js';

/** What every connection handler may use: the configuration, the storages and the live sessions. */
export interface ServerContext {
  readonly config: ServerConfig;
  readonly log: Logger;
  readonly storages: ReadonlyMap<string, Storage>;
  readonly registry: SessionRegistry;
  /** The agents' control channels. */
  readonly control: ControlHub;
  /** max_concurrent_sessions. */
  readonly gate: AdmissionGate;
  readonly metrics: ServerMetrics;
}

/** One accepted connection, after its first frame was read. */
export interface Connection {
  readonly socket: tls.TLSSocket;
  readonly frames: FrameSocket;
  /** `address:port` of the peer, for logs. */
  readonly remote: string;
  /** The protocol version the peer's first frame carried (0 for PING): answers are in its terms. */
  readonly version: number;
}

/** The CN of the peer's (already verified) client certificate. */
export function peerName(socket: tls.TLSSocket): string | undefined {
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}

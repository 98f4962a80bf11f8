import { HealthStatus, StorageState, statusName } from '../../protocol/constants.js';
import {
  decodeHealthPong,
  decodeHealthReport,
  decodeStorageHealth,
  encodeHealthPing,
  encodeHealthRequest,
  type HealthPong,
  type StorageHealth,
} from '../../protocol/frames.js';
import { formatBytes } from '../config/units.js';
import { FrameSocket } from '../net/frame-socket.js';
import type { TlsMaterial } from '../tls/material.js';
import { connectServer } from '../net/connect-server.js';

/** The server's readiness and, from a version-5 server, each storage by name (else `storages` is null). */
export interface HealthAnswer {
  status: HealthStatus;
  storages: StorageHealth[] | null;
  /** From a server before version 5: the least free space of any storage, unnamed. */
  freeBytes: number;
}

/**
 * `HLTH` over mTLS; a server older than version 5 closes that connection unanswered, and is then
 * asked with `PING`.
 */
export async function checkHealth(server: { host: string; port: number }, material: TlsMaterial, timeoutMs: number): Promise<HealthAnswer> {
  const socket = await connectServer(server, material, timeoutMs);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeHealthRequest());
    const head = await frames.read(decodeHealthReport, timeoutMs, 'health report').catch(() => null);
    if (head !== null) {
      const storages: StorageHealth[] = [];
      for (let i = 0; i < head.storages; i++) storages.push(await frames.read(decodeStorageHealth, timeoutMs, 'health report'));
      const free = storages.filter((s) => s.state !== StorageState.UNUSABLE).map((s) => s.freeBytes);
      return { status: head.status, storages, freeBytes: free.length ? Math.min(...free) : 0 };
    }
  } finally {
    socket.destroy();
  }
  const pong = await ping(server, material, timeoutMs);
  return { status: pong.status, storages: null, freeBytes: pong.freeBytes };
}

async function ping(server: { host: string; port: number }, material: TlsMaterial, timeoutMs: number): Promise<HealthPong> {
  const socket = await connectServer(server, material, timeoutMs);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeHealthPing());
    return await frames.read(decodeHealthPong, timeoutMs, 'health answer');
  } finally {
    socket.destroy();
  }
}

/** The storage closest to (or furthest below) its reserve; an unusable one first. */
function tightest(storages: readonly StorageHealth[]): StorageHealth | undefined {
  const margin = (s: StorageHealth): number => (s.state === StorageState.UNUSABLE ? -Infinity : s.freeBytes - s.minFreeBytes);
  return [...storages].sort((a, b) => margin(a) - margin(b))[0];
}

/**
 * First line: the status and the free space of the storage closest to its reserve, by name; then
 * one line per storage.
 */
export function describeHealth(h: HealthAnswer): string {
  const name = statusName(HealthStatus, h.status).replace('_', ' ');
  const free = (n: number): string => `${formatBytes(n)} (${n} bytes)`;
  if (h.storages === null) return `${name} free=${free(h.freeBytes)} (an older server: storages not named)`;
  const t = tightest(h.storages);
  if (t === undefined) return `${name} (no storages)`;
  const lines = [
    t.state === StorageState.UNUSABLE
      ? `${name} storage "${t.name}" cannot be used (the server's log says why)`
      : `${name} free=${free(t.freeBytes)} on storage "${t.name}" (reserve ${formatBytes(t.minFreeBytes)})`,
  ];
  for (const s of h.storages) {
    const state = statusName(StorageState, s.state);
    lines.push(`  ${s.name}: ${state}${s.state === StorageState.UNUSABLE ? '' : `, free ${formatBytes(s.freeBytes)}, reserve ${formatBytes(s.minFreeBytes)}`}`);
  }
  return lines.join('\n');
}

import { HealthStatus, statusName } from '../../protocol/constants.js';
import { decodeHealthPong, encodeHealthPing, type HealthPong } from '../../protocol/frames.js';
import { FrameSocket } from '../net/frame-socket.js';
import type { TlsMaterial } from '../tls/material.js';
import { connectServer } from '../net/connect-server.js';

/** `PING` over mTLS: the server's readiness and the free space on its storage disks. */
export async function checkHealth(server: { host: string; port: number }, material: TlsMaterial, timeoutMs: number): Promise<HealthPong> {
  const socket = await connectServer(server, material, timeoutMs);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeHealthPing());
    return await frames.read(decodeHealthPong, timeoutMs, 'health answer');
  } finally {
    socket.destroy();
  }
}

export function describeHealth(p: HealthPong): string {
  const name = statusName(HealthStatus, p.status).replace('_', ' ');
  return `${name} free=${(p.freeBytes / 1024 ** 3).toFixed(2)} GiB (${p.freeBytes} bytes)`;
}

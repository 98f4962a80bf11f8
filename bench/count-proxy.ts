/** A TCP forwarder on 127.0.0.1 that counts the bytes it carries each way (what a restore reads). */
import net from 'node:net';

export interface CountingProxy {
  port: number;
  /** Bytes from the server to the client, over all connections. */
  readonly down: number;
  readonly up: number;
  readonly connections: number;
  close(): Promise<void>;
}

export async function startCountingProxy(target: { host: string; port: number }): Promise<CountingProxy> {
  let down = 0;
  let up = 0;
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (c: Buffer) => (up += c.length));
    upstream.on('data', (c: Buffer) => (down += c.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get down() {
      return down;
    },
    get up() {
      return up;
    },
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

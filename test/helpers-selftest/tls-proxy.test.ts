/**
 * Self-test of the TLS man-in-the-middle proxy (test/helpers/tls-proxy.ts) against a small mTLS
 * echo server: plain forwarding with backpressure and half-close, exact plaintext cuts, the
 * hold-back-at-end plan, the ResumeACK rewrite, and client-certificate enforcement.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';

import { makePki, type Pki } from '../helpers/pki.js';
import { TempDirs } from '../helpers/tmp.js';
import { startTlsProxy, tlsProxyMaterial, type TlsConnPlan, type TlsProxy } from '../helpers/tls-proxy.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { withTimeout } from '../helpers/wait.js';

const tmp = new TempDirs();
after(() => tmp.cleanup());


interface UpConn {
  sock: tls.TLSSocket;
  cn: string | undefined;
  data: Buffer;
  ended: boolean;
  error?: string;
  closed: Promise<void>;
}

/**
 * An mTLS server behind the proxy. It echoes what it receives and echoes a half-close, except on
 * a connection that starts with RSME: that one gets a 9-byte ResumeACK (status 0, lastOffset
 * 123456789) followed by "tail", and nothing else; and one that starts with SLOW: that one echoes
 * nothing and stops reading for 500 ms once it has 1 MiB (its receive window closes).
 */
async function upstreamServer(pki: Pki): Promise<{ port: number; conns: UpConn[]; close(): Promise<void> }> {
  const conns: UpConn[] = [];
  const server = tls.createServer(
    {
      ca: readFileSync(pki.caCert),
      cert: readFileSync(pki.serverCert),
      key: readFileSync(pki.serverKey),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      allowHalfOpen: true,
    },
    (sock) => {
      const subject = sock.getPeerCertificate().subject as { CN?: string } | undefined;
      let resolveClosed!: () => void;
      const c: UpConn = { sock, cn: subject?.CN, data: Buffer.alloc(0), ended: false, closed: new Promise((r) => (resolveClosed = r)) };
      conns.push(c);
      let answered = false;
      let slowed = false;
      sock.on('data', (d: Buffer) => {
        c.data = Buffer.concat([c.data, d]);
        if (c.data.length >= 4 && c.data.subarray(0, 4).toString('latin1') === 'SLOW') {
          if (!slowed && c.data.length >= 1024 * 1024) {
            slowed = true;
            sock.pause();
            setTimeout(() => sock.resume(), 500); // the scenario: a server that stops reading for a while
          }
          return;
        }
        if (c.data.length >= 4 && c.data.subarray(0, 4).toString('latin1') === 'RSME') {
          if (!answered) {
            answered = true;
            const ack = Buffer.alloc(9);
            ack.writeBigUInt64BE(123456789n, 1);
            sock.write(Buffer.concat([ack, Buffer.from('tail')]));
          }
          return;
        }
        sock.write(d);
      });
      sock.on('end', () => {
        c.ended = true;
        sock.end();
      });
      sock.on('error', (e: NodeJS.ErrnoException) => (c.error ??= e.code ?? e.message));
      sock.on('close', () => resolveClosed());
    },
  );
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    close: () =>
      withTimeout(
        new Promise<void>((r) => {
          for (const c of conns) c.sock.destroy();
          server.close(() => r());
        }),
        5000,
        'upstream close',
      ),
  };
}

interface Client {
  sock: tls.TLSSocket;
  data(): Buffer;
  ended(): boolean;
  closed: Promise<{ error?: string }>;
}

function connect(port: number, pki: Pki, pair: { cert: string; key: string } | null): Promise<Client> {
  return withTimeout(
    new Promise<Client>((resolve, reject) => {
      const opts: tls.ConnectionOptions = { host: '127.0.0.1', port, ca: readFileSync(pki.caCert), minVersion: 'TLSv1.3' };
      if (pair) {
        opts.cert = readFileSync(pair.cert);
        opts.key = readFileSync(pair.key);
      }
      const sock = tls.connect(opts);
      const chunks: Buffer[] = [];
      let error: string | undefined;
      let ended = false;
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('end', () => (ended = true));
      sock.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
      const closed = new Promise<{ error?: string }>((r) => sock.on('close', () => r({ error })));
      sock.once('secureConnect', () => resolve({ sock, data: () => Buffer.concat(chunks), ended: () => ended, closed }));
      sock.once('error', reject);
    }),
    5000,
    'TLS connect through the proxy',
  );
}

describe('TLS MITM proxy', { timeout: 60_000 }, () => {
  let pki: Pki;
  let up: Awaited<ReturnType<typeof upstreamServer>>;
  const proxies: TlsProxy[] = [];
  before(async () => {
    pki = await makePki(join(await tmp.make('tlsproxy-'), 'pki'), { agents: ['agent-a'] });
    up = await upstreamServer(pki);
  });
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await up?.close();
  });
  const proxy = async (plan?: TlsConnPlan[]) => {
    const p = await startTlsProxy({ target: { host: '127.0.0.1', port: up.port }, tls: tlsProxyMaterial(pki, 'agent-a'), plan });
    proxies.push(p);
    return p;
  };

  it('forwards plaintext both ways with backpressure, presents the agent certificate, propagates the half-close', async () => {
    const p = await proxy();
    const n = up.conns.length;
    const c = await connect(p.port, pki, pki.agents['agent-a']);
    const payload = Buffer.concat([Buffer.from('NBKP'), randomBytesSeeded(8 * 1024 * 1024 + 3, 11)]);
    c.sock.end(payload);
    await withTimeout(c.closed, 20_000, 'echo of 8 MiB');
    assert.ok(c.ended(), 'the client saw the echoed half-close');
    assert.equal(c.data().length, payload.length);
    assert.ok(c.data().equals(payload));
    assert.equal(up.conns[n].cn, 'agent-a', 'the proxy presents the agent certificate upstream');
    assert.ok(up.conns[n].ended, 'the upstream saw a clean half-close');
    assert.equal(up.conns[n].error, undefined);
    const info = p.conns[0];
    assert.equal(info.kind, 'NBKP');
    assert.equal(info.bytesClientToServer, payload.length);
    assert.equal(info.bytesServerToClient, payload.length);
    assert.equal(info.clientEnded, true);
    await p.waitFor(() => p.conns[0].state === 'closed', 5000, 'connection closed');
  });

  it('resetAfterPlaintextBytes: the server gets exactly n plaintext bytes, then both sides are reset', async () => {
    const p = await proxy([{ resetAfterPlaintextBytes: 1000 }]);
    const n = up.conns.length;
    const c = await connect(p.port, pki, pki.agents['agent-a']);
    const sent = randomBytesSeeded(6000, 2);
    c.sock.write(sent.subarray(0, 600));
    // Two writes on purpose: the cut falls inside the second piece the proxy reads.
    await p.waitFor(() => up.conns.length > n && up.conns[n].data.length === 600, 5000, 'the first 600 bytes at the server');
    c.sock.write(sent.subarray(600));
    const { error } = await withTimeout(c.closed, 5000, 'client closed by the reset');
    assert.equal(error, 'ECONNRESET');
    await p.waitFor(() => up.conns.length > n, 5000, 'upstream connection');
    await withTimeout(up.conns[n].closed, 5000, 'upstream closed by the reset');
    assert.equal(up.conns[n].data.length, 1000);
    assert.ok(up.conns[n].data.equals(sent.subarray(0, 1000)));
    assert.equal(up.conns[n].ended, false, 'no clean half-close upstream');
    assert.equal(up.conns[n].error, 'ECONNRESET');
    assert.equal(p.conns[0].state, 'reset');
    assert.equal(p.conns[0].flushedBeforeReset, true);
    assert.equal(p.conns[0].bytesClientToServer, 1000);
  });

  it('resetAfterPlaintextBytes delivers every forwarded byte even while the server applies backpressure', async () => {
    // The server stops reading at 1 MiB; the bytes up to the cut fit in the kernel buffers, so
    // they are "written" long before the server has them: the reset must wait for the server's
    // kernel to acknowledge them, or they are lost with the RST.
    const cut = 1536 * 1024;
    const p = await proxy([{ resetAfterPlaintextBytes: cut }]);
    const n = up.conns.length;
    const c = await connect(p.port, pki, pki.agents['agent-a']);
    const sent = Buffer.concat([Buffer.from('SLOW'), randomBytesSeeded(2 * 1024 * 1024, 4)]);
    c.sock.write(sent);
    const { error } = await withTimeout(c.closed, 10_000, 'client closed by the reset');
    assert.equal(error, 'ECONNRESET');
    await withTimeout(up.conns[n].closed, 5000, 'upstream closed by the reset');
    assert.equal(up.conns[n].data.length, cut);
    assert.ok(up.conns[n].data.equals(sent.subarray(0, cut)));
    assert.equal(p.conns[0].flushedBeforeReset, true);
    assert.equal(p.conns[0].bytesClientToServer, cut);
    assert.ok(p.conns[0].bytesDropped <= sent.length - cut, 'dropped: only what arrived after the cut');
  });

  it('holdBackAtClientEnd: everything but the last n bytes reaches the server, then a reset at the half-close', async () => {
    const p = await proxy([{ holdBackAtClientEnd: 20 }]);
    const n = up.conns.length;
    const c = await connect(p.port, pki, pki.agents['agent-a']);
    const sent = Buffer.concat([Buffer.from('NBKP'), randomBytesSeeded(300_000, 3)]);
    // A 5-byte hello is forwarded whole (nothing is held back before the server's first byte)...
    c.sock.write(sent.subarray(0, 5));
    await p.waitFor(() => c.data().length === 5, 5000, 'the hello echoed');
    // ...then pieces both larger and smaller than the hold-back.
    c.sock.write(sent.subarray(5, 10));
    c.sock.write(sent.subarray(10, 200_000));
    // The proxy has taken those (all but the held-back 20 are at the server) before the next piece.
    await p.waitFor(() => up.conns[n].data.length === 200_000 - 20, 5000, 'all but 20 of the first 200 000 bytes at the server');
    c.sock.write(sent.subarray(200_000, 200_007));
    c.sock.end(sent.subarray(200_007));
    const { error } = await withTimeout(c.closed, 5000, 'client closed by the reset');
    assert.equal(error, 'ECONNRESET');
    await withTimeout(up.conns[n].closed, 5000, 'upstream closed by the reset');
    assert.equal(up.conns[n].data.length, sent.length - 20);
    assert.ok(up.conns[n].data.equals(sent.subarray(0, sent.length - 20)));
    assert.equal(up.conns[n].ended, false);
    assert.equal(up.conns[n].error, 'ECONNRESET');
    const info = p.conns[0];
    assert.equal(info.state, 'reset');
    assert.equal(info.kind, 'NBKP');
    assert.equal(info.bytesClientToServer, sent.length - 20);
    assert.equal(info.bytesDropped, 20);
    assert.equal(info.flushedBeforeReset, true);
    // The echo came back (minus what was held back) before the reset, or part of it: never more.
    assert.ok(c.data().length <= sent.length - 20);
  });

  it('rewriteResumeOffset: rewrites the lastOffset of an RSME answer only, and leaves other connections alone', async () => {
    const p = await proxy([{ rewriteResumeOffset: 0 }, { rewriteResumeOffset: 7 }]);
    const c1 = await connect(p.port, pki, pki.agents['agent-a']);
    c1.sock.write('RSME\x02session\nagent-a\nmain\n');
    await p.waitFor(() => c1.data().length >= 13, 5000, 'resume answer');
    const got = c1.data();
    assert.equal(got[0], 0, 'status untouched');
    assert.equal(got.readBigUInt64BE(1), 0n, 'offset rewritten');
    assert.equal(got.subarray(9).toString(), 'tail', 'what follows passes unchanged');
    assert.deepEqual(p.conns[0].resumeAck, { status: 0, lastOffset: 123456789, rewrittenTo: 0 });
    assert.equal(p.conns[0].kind, 'RSME');
    c1.sock.destroy();

    // Not RSME: the 2nd plan does nothing (an echo of 9+ bytes comes back unchanged).
    const c2 = await connect(p.port, pki, pki.agents['agent-a']);
    const msg = Buffer.from('PING and then some more bytes');
    c2.sock.end(msg);
    await withTimeout(c2.closed, 5000, 'echo');
    assert.ok(c2.data().equals(msg));
    assert.equal(p.conns[1].resumeAck, undefined);
    assert.equal(p.conns[1].kind, 'PING');
  });

  it('requires a client certificate from the test CA, like the real server', async () => {
    const p = await proxy();
    const before = up.conns.length;
    for (const pair of [null, pki.rogue]) {
      const echoed = await connect(p.port, pki, pair).then(
        async (c) => {
          // TLS 1.3: the client learns of the refusal after its own handshake completes.
          c.sock.write('NBKP');
          await withTimeout(c.closed, 5000, 'refused connection closes');
          return c.data().length;
        },
        () => 0,
      );
      assert.equal(echoed, 0, 'nothing was forwarded for a refused client');
    }
    await p.waitFor(() => p.conns.length === 2 && p.conns.every((i) => i.state === 'failed'), 5000, 'both refused');
    assert.equal(up.conns.length, before, 'no upstream connection for a refused client');
  });
});

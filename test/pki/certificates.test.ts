import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { createCa, issueAgent, issueServer, type Issued } from '../../src/pki/certificates.js';
import { clientTlsOptions, loadTlsMaterial, serverTlsOptions } from '../../src/tls/material.js';

/** The built-in PKI, checked by openssl (an independent reader) and by a real mTLS handshake. */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-pki-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const AGENT = 'web-01,db+x';
let ca: Issued;
const files: Record<string, string> = {};

function save(name: string, pair: Issued): void {
  files[`${name}.crt`] = path.join(dir, `${name}.crt`);
  files[`${name}.key`] = path.join(dir, `${name}.key`);
  fs.writeFileSync(files[`${name}.crt`], pair.certPem);
  fs.writeFileSync(files[`${name}.key`], pair.keyPem, { mode: 0o600 });
}

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

before(async () => {
  ca = await createCa('nbackup test CA', 30);
  save('ca', ca);
  save('server', await issueServer('backup.test', ['127.0.0.1', 'localhost'], { ca, days: 10 }));
  save('agent', await issueAgent(AGENT, { ca, days: 10 }));
});

test('openssl verify accepts the server certificate for TLS server use and the agent one for client use', () => {
  assert.match(openssl(['verify', '-CAfile', files['ca.crt'], '-purpose', 'sslserver', files['server.crt']]), /: OK/);
  assert.match(openssl(['verify', '-CAfile', files['ca.crt'], '-purpose', 'sslclient', files['agent.crt']]), /: OK/);
  // The purposes are not interchangeable: a server certificate is not a client one.
  assert.throws(() => openssl(['verify', '-CAfile', files['ca.crt'], '-purpose', 'sslclient', files['server.crt']]));
});

test('the certificates carry ECDSA P-256 keys, the CA constraints, the usages and the SANs', () => {
  const caText = openssl(['x509', '-in', files['ca.crt'], '-noout', '-text']);
  assert.match(caText, /CA:TRUE, pathlen:0/);
  assert.match(caText, /Certificate Sign, CRL Sign/);
  assert.match(caText, /ecdsa-with-SHA256/);
  assert.match(caText, /NIST CURVE: P-256|prime256v1/);
  const server = openssl(['x509', '-in', files['server.crt'], '-noout', '-text']);
  assert.match(server, /CA:FALSE/);
  assert.match(server, /TLS Web Server Authentication/);
  assert.match(server, /IP Address:127\.0\.0\.1/);
  assert.match(server, /DNS:localhost/);
  const agent = openssl(['x509', '-in', files['agent.crt'], '-noout', '-text']);
  assert.match(agent, /TLS Web Client Authentication/);
  assert.match(openssl(['pkey', '-in', files['agent.key'], '-noout', '-text']), /P-256|prime256v1/);
});

test('an mTLS 1.3 handshake between the issued pair succeeds and the server sees the agent name as CN', async () => {
  const server = loadTlsMaterial({ ca: files['ca.crt'], cert: files['server.crt'], key: files['server.key'] });
  const agent = loadTlsMaterial({ ca: files['ca.crt'], cert: files['agent.crt'], key: files['agent.key'] });
  assert.equal(agent.commonName, AGENT);
  const seen = new Promise<string>((resolve) => {
    const srv = tls.createServer(serverTlsOptions(server), (socket) => {
      const cn = socket.getPeerCertificate().subject.CN;
      // TLS 1.3 with the suite asked for first (the faster AES-128-GCM).
      assert.equal(socket.getProtocol(), 'TLSv1.3');
      assert.equal(socket.getCipher().standardName, 'TLS_AES_128_GCM_SHA256');
      socket.end();
      srv.close();
      resolve(String(Array.isArray(cn) ? cn[0] : cn));
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      const c = tls.connect({ ...clientTlsOptions(agent, '127.0.0.1'), port }, () => c.end());
      c.on('error', () => undefined);
    });
  });
  assert.equal(await seen, AGENT);
});

test('a server certificate without any SAN is refused with a usage error', async () => {
  await assert.rejects(issueServer('x', [], { ca, days: 1 }), (err: Error & { kind?: string }) => err.kind === 'usage' && /at least one SAN/.test(err.message));
});

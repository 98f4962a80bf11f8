/**
 * Tests for the test helpers themselves (PKI, tree, compare, GNU tar wrappers, fault proxy,
 * process runner). They need only openssl, GNU tar, gzip and mkfifo.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createHash } from 'node:crypto';
import { chmod, lstat, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { parse as parseYaml } from 'yaml';

import { assertTreesEqual, compareTrees } from '../helpers/compare.js';
import { makePki, openssl, type Pki } from '../helpers/pki.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { runAgent, spawnLogged, startServer, writeYaml } from '../helpers/proc.js';
import { gnuTarCreate, gnuTarExtract, gnuTarList, gzipTest } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, OLD_TIMES, randomBytesSeeded, type TreeInfo } from '../helpers/tree.js';
import { sleep, withTimeout } from '../helpers/wait.js';

const tmp = new TempDirs();
after(() => tmp.cleanup());

// ---------------------------------------------------------------------------------------------
describe('makePki', { timeout: 30_000 }, () => {
  let pki: Pki;
  let elapsed = 0;
  before(async () => {
    const dir = await tmp.make('pki-');
    const t0 = Date.now();
    pki = await makePki(join(dir, 'pki'), { agents: ['alpha', 'beta-2', 'café'] });
    elapsed = Date.now() - t0;
  });

  it('is fast', () => {
    assert.ok(elapsed < 5000, `makePki took ${elapsed} ms`);
  });

  it('returns absolute paths to PEM files', async () => {
    const paths = [pki.caCert, pki.serverCert, pki.serverKey, pki.rogue.caCert, pki.rogue.cert, pki.rogue.key];
    for (const a of Object.values(pki.agents)) paths.push(a.cert, a.key);
    for (const p of paths) {
      assert.ok(p.startsWith('/'), p);
      assert.match(await readFile(p, 'utf8'), /-----BEGIN (CERTIFICATE|PRIVATE KEY|EC PRIVATE KEY)-----/);
    }
    assert.deepEqual(Object.keys(pki.agents), ['alpha', 'beta-2', 'café']);
  });

  it('certificates verify against the CA with the right purpose', async () => {
    const out = await openssl(['verify', '-CAfile', pki.caCert, '-purpose', 'sslserver', pki.serverCert]);
    assert.match(out, /: OK/);
    for (const a of Object.values(pki.agents)) {
      assert.match(await openssl(['verify', '-CAfile', pki.caCert, '-purpose', 'sslclient', a.cert]), /: OK/);
    }
    assert.match(await openssl(['verify', '-CAfile', pki.rogue.caCert, '-purpose', 'sslclient', pki.rogue.cert]), /: OK/);
  });

  it('the rogue client certificate does not verify against the real CA', async () => {
    await assert.rejects(openssl(['verify', '-CAfile', pki.caCert, pki.rogue.cert]), /unable to get local issuer|verification failed/);
  });

  it('has the right subjects, SANs, key types and EKUs', async () => {
    const ca = new X509Certificate(await readFile(pki.caCert));
    assert.equal(ca.ca, true);
    const server = new X509Certificate(await readFile(pki.serverCert));
    assert.equal(server.subjectAltName, 'IP Address:127.0.0.1, DNS:localhost');
    assert.ok(server.checkIssued(ca));
    assert.ok(server.verify(ca.publicKey));
    assert.deepEqual(server.keyUsage, ['1.3.6.1.5.5.7.3.1']); // serverAuth
    assert.equal(server.publicKey.asymmetricKeyType, 'ec');
    assert.equal(server.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    for (const [name, pair] of Object.entries(pki.agents)) {
      const c = new X509Certificate(await readFile(pair.cert));
      assert.equal(c.subject, `CN=${name}`);
      assert.deepEqual(c.keyUsage, ['1.3.6.1.5.5.7.3.2']); // clientAuth
      assert.ok(c.verify(ca.publicKey));
    }
    const rogue = new X509Certificate(await readFile(pki.rogue.cert));
    assert.equal(rogue.subject, 'CN=alpha');
    assert.equal(rogue.verify(ca.publicKey), false);
  });

  it('works for a real TLS 1.3 mTLS handshake, and the rogue client is rejected', async () => {
    const [ca, cert, key] = await Promise.all([readFile(pki.caCert), readFile(pki.serverCert), readFile(pki.serverKey)]);
    const server = tls.createServer(
      { ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      (s) => {
        s.on('error', () => undefined);
        s.end(`hello ${(s.getPeerCertificate().subject as { CN?: string }).CN}`);
      },
    );
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const connect = async (pair: { cert: string; key: string }) => {
      const [c, k] = await Promise.all([readFile(pair.cert), readFile(pair.key)]);
      return withTimeout(
        new Promise<string>((resolve, reject) => {
          const s = tls.connect({ host: '127.0.0.1', port, ca, cert: c, key: k, minVersion: 'TLSv1.3' });
          let data = '';
          s.setEncoding('utf8');
          s.on('data', (d: string) => (data += d));
          s.on('end', () => resolve(data));
          s.on('error', reject);
          s.on('close', () => resolve(data));
        }),
        5000,
        'TLS connection',
      );
    };
    try {
      assert.equal(await connect(pki.agents['alpha']), 'hello alpha');
      // In TLS 1.3 the client learns about the rejected certificate after the handshake.
      const rogue = await connect(pki.rogue).catch((err: Error) => `error: ${err.message}`);
      assert.ok(!rogue.startsWith('hello'), rogue);
    } finally {
      await withTimeout(new Promise<void>((r) => server.close(() => r())), 5000, 'server.close');
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe('makeTree + GNU tar + compareTrees', { timeout: 60_000 }, () => {
  let base: string;
  let info: TreeInfo;
  before(async () => {
    base = await tmp.make('tree-');
    info = await makeTree(join(base, 'src'));
  });

  it('builds every case', async () => {
    const r = info.root;
    const size = async (rel: string) => (await lstat(join(r, rel))).size;
    assert.equal(await size('empty.txt'), 0);
    for (const n of [1, 511, 512, 513]) assert.equal(await size(`sizes/${n}.bin`), n);
    assert.equal(await size('sizes/1MiB+7.bin'), 1024 * 1024 + 7);
    assert.ok((await size(info.notable.random)) > 3 * 1024 * 1024);
    assert.ok((await size(info.notable.text)) > 2 * 1024 * 1024);
    assert.ok(Buffer.byteLength(info.notable.longName.split('/').pop() as string) > 100);
    assert.ok(Buffer.byteLength(info.notable.longComponent.split('/').pop() as string) >= 200);
    assert.ok(Buffer.byteLength(info.notable.longPath) > 255);
    for (const rel of ['unicode/café.txt', 'unicode/日本語/ファイル.txt', info.notable.emoji]) {
      assert.ok((await lstat(join(r, rel))).isFile(), rel);
    }
    assert.equal(await readlink(join(r, 'links/relative')), '../sizes/1.bin');
    assert.equal(await readlink(join(r, 'links/absolute')), join(r, 'sizes/1.bin'));
    await assert.rejects(stat(join(r, 'links/dangling')), { code: 'ENOENT' });
    assert.ok((await stat(join(r, 'links/to-dir'))).isDirectory());
    assert.ok((await readlink(join(r, 'links/long-target'))).length > 100);
    assert.ok((await stat(join(r, 'links/long-target'))).isFile());
    const inodes = await Promise.all(info.hardLinkGroups[0].map(async (p) => (await lstat(join(r, p))).ino));
    assert.equal(new Set(inodes).size, 1);
    assert.equal(info.hardLinkGroups[0].length, 3);
    assert.equal((await lstat(join(r, 'modes/0600.txt'))).mode & 0o7777, 0o600);
    assert.equal((await lstat(join(r, 'modes/0640.txt'))).mode & 0o7777, 0o640);
    assert.equal((await lstat(join(r, 'modes/0755.sh'))).mode & 0o7777, 0o755);
    assert.equal((await lstat(join(r, 'modes/0444.txt'))).mode & 0o7777, 0o444);
    assert.equal((await lstat(join(r, 'modes/private-0700'))).mode & 0o7777, 0o700);
    assert.equal((await lstat(join(r, 'old/old-file.txt'))).mtimeMs, Date.parse('2001-02-03T04:05:06Z'));
    assert.equal((await lstat(join(r, 'old'))).mtimeMs, OLD_TIMES.dir1999 * 1000);
    assert.ok((await lstat(join(r, 'special/fifo'))).isFIFO());
    assert.ok((await lstat(join(r, 'empty-nested/a/b/c'))).isDirectory());
    assert.deepEqual(info.excludes, ['*.log', '.git/**', 'node_modules/**']);
    for (const p of ['app.log', 'sub/deep/x.log', '.git', '.git/HEAD', 'node_modules', 'node_modules/pkg/index.js']) {
      assert.ok(info.excludedPaths.includes(p), p);
      await lstat(join(r, p));
    }
  });

  it('content is deterministic', async () => {
    const a = randomBytesSeeded(1000, 5);
    assert.deepEqual(a, randomBytesSeeded(1000, 5));
    assert.notDeepEqual(a, randomBytesSeeded(1000, 6));
    const h = createHash('sha256').update(await readFile(join(info.root, 'sizes/513.bin'))).digest('hex');
    assert.equal(h, createHash('sha256').update(randomBytesSeeded(513, 1513)).digest('hex'));
  });

  it('round-trips through GNU tar with no differences', async () => {
    const archive = join(base, 'full.tar.gz');
    await gnuTarCreate(info.root, archive);
    await gzipTest(archive);
    const names = await gnuTarList(archive);
    assert.ok(names.includes('./unicode/café.txt'), names.slice(0, 10).join('\n'));
    assert.ok(names.includes('./special/fifo'));
    assert.ok(names.includes(`./${info.notable.longPath}`));
    const dest = join(base, 'restore-full');
    assert.equal(await gnuTarExtract(archive, dest), '');
    assert.deepEqual(await compareTrees(info.root, dest, { hardLinkGroups: info.hardLinkGroups }), []);
    await assertTreesEqual(info.root, dest, { hardLinkGroups: info.hardLinkGroups });

    // The excluded paths are present in this restore, and every one of them is reported.
    const diffs = await compareTrees(info.root, dest, { excludedPaths: info.excludedPaths });
    assert.equal(diffs.length, info.excludedPaths.length, diffs.join('\n'));
    assert.ok(diffs.every((d) => d.includes('excluded path is present')));
  });

  it('an archive made with the equivalent GNU tar excludes matches excludedPaths', async () => {
    const archive = join(base, 'excl.tar.gz');
    await gnuTarCreate(info.root, archive, { extraArgs: ['--exclude=*.log', '--exclude=./.git', '--exclude=./node_modules'] });
    const dest = join(base, 'restore-excl');
    await gnuTarExtract(archive, dest);
    await assertTreesEqual(info.root, dest, { excludedPaths: info.excludedPaths, hardLinkGroups: info.hardLinkGroups });
    // Without the exclusions the same restore is missing things.
    const diffs = await compareTrees(info.root, dest);
    assert.ok(diffs.some((d) => d.startsWith('app.log: missing')), diffs.join('\n'));
    assert.ok(diffs.some((d) => d.startsWith('.git: missing')), diffs.join('\n'));
    assert.ok(!diffs.some((d) => d.startsWith('.git/HEAD')), 'a missing directory is reported once');
  });

  it('reports changed mode, content, mtime, symlink target, type, and broken hard links', async () => {
    const archive = join(base, 'full2.tar.gz');
    await gnuTarCreate(info.root, archive);
    const dest = join(base, 'restore-mutated');
    await gnuTarExtract(archive, dest);
    const { rm, symlink, utimes, mkdir, copyFile, unlink } = await import('node:fs/promises');
    await chmod(join(dest, 'modes/0640.txt'), 0o644);
    const f513 = join(dest, 'sizes/513.bin');
    const buf = await readFile(f513);
    buf[100] ^= 0xff;
    await writeFile(f513, buf); // same size, different content
    await utimes(f513, OLD_TIMES.file2001, OLD_TIMES.file2001);
    await utimes(join(dest, 'sizes/512.bin'), 1e9, 1e9);
    await rm(join(dest, 'links/relative'));
    await symlink('../sizes/511.bin', join(dest, 'links/relative'));
    await rm(join(dest, 'special/fifo'));
    await writeFile(join(dest, 'special/fifo'), '');
    await utimes(join(dest, 'special'), (await lstat(join(info.root, 'special'))).mtime, (await lstat(join(info.root, 'special'))).mtime);
    await writeFile(join(dest, 'extra.txt'), 'x');
    await mkdir(join(dest, 'extra-dir/inner'), { recursive: true });
    await unlink(join(dest, 'hardlinks/b.txt'));
    await copyFile(join(dest, 'hardlinks/a.txt'), join(dest, 'hardlinks/b.txt'));
    const diffs = await compareTrees(info.root, dest, { hardLinkGroups: info.hardLinkGroups });
    const has = (re: RegExp) => assert.ok(diffs.some((d) => re.test(d)), `${re} not in:\n${diffs.join('\n')}`);
    has(/^modes\/0640\.txt: mode differs: source 0640, restore 0644/);
    has(/^sizes\/513\.bin: content differs/);
    has(/^sizes\/512\.bin: mtime differs/);
    has(/^links\/relative: symlink target differs/);
    has(/^special\/fifo: type differs: source fifo, restore file/);
    has(/^extra\.txt: unexpected/);
    has(/^extra-dir: unexpected/);
    has(/hardlinks\/b\.txt is not the same inode/);
    assert.ok(!diffs.some((d) => d.startsWith('extra-dir/inner')), 'an unexpected directory is reported once');
    await assert.rejects(assertTreesEqual(info.root, dest, { hardLinkGroups: info.hardLinkGroups }), (err: Error) => {
      assert.equal(err.name, 'AssertionError');
      assert.match(err.message, /trees differ \(\d+ differences\)/);
      return true;
    });
  });

  it('gzipTest and gnuTarExtract reject broken archives with the tool stderr', async () => {
    const good = join(base, 'full.tar.gz');
    const data = await readFile(good);
    const truncated = join(base, 'truncated.tar.gz');
    await writeFile(truncated, data.subarray(0, Math.floor(data.length / 2)));
    await assert.rejects(gzipTest(truncated), /gzip -t .*unexpected end of file/s);
    await assert.rejects(gnuTarExtract(truncated, join(base, 'restore-bad')), /tar .*(Unexpected EOF|unexpected end of file)/is);
  });
});

// ---------------------------------------------------------------------------------------------
describe('fault proxy', { timeout: 60_000 }, () => {
  interface Echo {
    port: number;
    received: Buffer[];
    sockets: net.Socket[];
    errors: string[];
    close(): Promise<void>;
  }
  async function echoServer(): Promise<Echo> {
    const sockets: net.Socket[] = [];
    const received: Buffer[] = [];
    const errors: string[] = [];
    const server = net.createServer((s) => {
      const i = sockets.push(s) - 1;
      received[i] = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        received[i] = Buffer.concat([received[i], d]);
      });
      s.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
      s.pipe(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      port: (server.address() as net.AddressInfo).port,
      received,
      sockets,
      errors,
      close: () =>
        withTimeout(
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
          5000,
          'echo server close',
        ),
    };
  }

  interface Client {
    sock: net.Socket;
    data(): Buffer;
    closed: Promise<{ error?: string }>;
  }
  function connect(port: number): Promise<Client> {
    return withTimeout(
      new Promise<Client>((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        const chunks: Buffer[] = [];
        let error: string | undefined;
        sock.on('data', (d: Buffer) => chunks.push(d));
        sock.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
        const closed = new Promise<{ error?: string }>((r) => sock.on('close', () => r({ error })));
        sock.once('connect', () => resolve({ sock, data: () => Buffer.concat(chunks), closed }));
        sock.once('error', reject);
      }),
      5000,
      'connect',
    );
  }

  let echo: Echo;
  const proxies: Proxy[] = [];
  before(async () => {
    echo = await echoServer();
  });
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await echo.close();
  });
  const proxy = async (plan?: Parameters<typeof startProxy>[0]['plan']) => {
    const p = await startProxy({ target: { host: '127.0.0.1', port: echo.port }, plan });
    proxies.push(p);
    return p;
  };

  it('forwards both directions (with backpressure on a large transfer)', async () => {
    const p = await proxy();
    const c = await connect(p.port);
    const payload = randomBytesSeeded(8 * 1024 * 1024 + 3, 77);
    c.sock.end(payload);
    await withTimeout(c.closed, 20_000, 'echo of 8 MiB');
    assert.equal(c.data().length, payload.length);
    assert.ok(c.data().equals(payload));
    assert.equal(p.connections, 1);
    assert.equal(p.bytesClientToServer, payload.length);
    assert.equal(p.bytesServerToClient, payload.length);
    assert.equal(p.conns[0].bytesClientToServer, payload.length);
    await p.waitFor(() => p.conns[0].state === 'closed', 5000, 'connection closed');
  });

  it('resets both sides after the planned number of bytes', async () => {
    const p = await proxy([{ resetAfterBytes: 1000 }]);
    const before = echo.sockets.length;
    const c = await connect(p.port);
    c.sock.write(randomBytesSeeded(600, 1));
    // Two writes on purpose: the cut falls inside the second chunk the proxy reads.
    await p.waitFor(() => p.conns[0]?.bytesClientToServer === 600, 5000, 'the first 600 bytes forwarded');
    c.sock.write(randomBytesSeeded(5000, 2));
    const { error } = await withTimeout(c.closed, 5000, 'client closed by reset');
    assert.equal(error, 'ECONNRESET');
    assert.equal(p.conns[0].bytesClientToServer, 1000);
    assert.equal(p.conns[0].state, 'reset');
    assert.equal(p.bytesClientToServer, 1000);
    await withTimeout(
      new Promise<void>((r) => (echo.sockets[before].destroyed ? r() : echo.sockets[before].once('close', () => r()))),
      5000,
      'upstream closed by reset',
    );
    assert.equal(echo.received[before].length, 1000);
    assert.ok(echo.errors.includes('ECONNRESET'), echo.errors.join(','));
  });

  it('stalls silently after the planned number of bytes, until closed', async () => {
    const p = await proxy([{ stallAfterBytes: 100 }]);
    const before = echo.sockets.length;
    const c = await connect(p.port);
    let closedEarly = false;
    void c.closed.then(() => (closedEarly = true));
    c.sock.write(randomBytesSeeded(1000, 3));
    await p.waitFor(() => p.conns[0]?.state === 'stalled', 5000, 'stall');
    await sleep(300); // a negative check: nothing more is forwarded, nothing closed, for 300 ms
    assert.equal(echo.received[before].length, 100);
    assert.ok(c.data().length <= 100);
    assert.equal(p.conns[0].bytesClientToServer, 100);
    assert.equal(closedEarly, false);
    assert.equal(echo.sockets[before].destroyed, false);
    // The upstream peer giving up is not propagated to the client either.
    echo.sockets[before].destroy();
    await sleep(100); // a negative check: the client is still open 100 ms later
    assert.equal(closedEarly, false);
    await p.close();
    await withTimeout(c.closed, 5000, 'client closed by proxy.close()');
  });

  it('refuses, then forwards connections beyond the plan; plans can be changed at runtime', async () => {
    const p = await proxy([{ refuse: true }]);
    const before = echo.sockets.length;
    const c1 = await connect(p.port);
    await withTimeout(c1.closed, 5000, 'refused connection closed');
    assert.equal(c1.data().length, 0);
    assert.equal(p.conns[0].state, 'refused');
    assert.equal(echo.sockets.length, before, 'no upstream connection for a refused one');

    const c2 = await connect(p.port);
    c2.sock.end('ping');
    await withTimeout(c2.closed, 5000, 'forwarded connection');
    assert.equal(c2.data().toString(), 'ping');

    p.setPlan([{ refuse: true }]);
    p.pushPlan({ resetAfterBytes: 2 });
    assert.equal(p.pendingPlans.length, 2);
    const c3 = await connect(p.port);
    await withTimeout(c3.closed, 5000, 'refused again');
    const c4 = await connect(p.port);
    c4.sock.write('abcdef');
    const r4 = await withTimeout(c4.closed, 5000, 'reset after 2');
    assert.equal(r4.error, 'ECONNRESET');
    assert.equal(p.conns[3].bytesClientToServer, 2);
    assert.equal(p.connections, 4);
    await p.waitForConnections(4, 100);
    await assert.rejects(p.waitForConnections(5, 50), /timed out/);
  });

  it('throttles client→server to the planned rate, intact, and forwards a half-close after the queue', async () => {
    const p = await proxy([{ throttleBytesPerSec: 256 * 1024 }]);
    const c = await connect(p.port);
    const payload = randomBytesSeeded(384 * 1024, 78);
    const t0 = Date.now();
    c.sock.end(payload);
    await withTimeout(c.closed, 10_000, 'echo of a throttled 384 KiB');
    const took = Date.now() - t0;
    assert.ok(c.data().equals(payload), 'every byte, in order');
    assert.equal(p.conns[0].bytesClientToServer, payload.length);
    // 384 KiB at 256 KiB/s is 1.5 s; at most 50 ms of burst, and the echo back is not throttled.
    assert.ok(took >= 1400, `took ${took} ms`);
    assert.ok(took < 4000, `took ${took} ms`);
  });

  it('survives an unreachable target', async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const port = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const p = await startProxy({ target: { host: '127.0.0.1', port } });
    proxies.push(p);
    const c = await connect(p.port);
    await withTimeout(c.closed, 5000, 'closed when upstream is refused');
    assert.match(p.conns[0].upstreamError ?? '', /ECONNREFUSED/);
  });
});

// ---------------------------------------------------------------------------------------------
describe('process helpers', { timeout: 60_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await tmp.make('proc-');
    // A stand-in for the server CLI: logs pino-style JSON, listens on port 0, exits on SIGTERM.
    await writeFile(
      join(dir, 'fake-server.mjs'),
      `import net from 'node:net';
import { readFileSync } from 'node:fs';
const i = process.argv.indexOf('--config');
const cfg = readFileSync(process.argv[i + 1], 'utf8');
console.log('not json');
process.stderr.write(JSON.stringify({ level: 30, msg: 'starting', config: cfg.trim() }) + '\\n');
const s = net.createServer((c) => c.end('hi')).listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ level: 30, msg: 'listening', port: s.address().port }));
  // The scenario: a log line that comes later, for waitForLog to wait for.
  setTimeout(() => console.log(JSON.stringify({ level: 30, msg: 'tick', n: 1 })), 100);
});
if (process.env.IGNORE_TERM !== '1') process.on('SIGTERM', () => { console.log(JSON.stringify({ msg: 'bye' })); process.exit(0); });
else process.on('SIGTERM', () => {});
`,
    );
    await writeFile(
      join(dir, 'fake-agent.mjs'),
      `const mode = process.argv[2];
console.log(JSON.stringify({ msg: 'args', args: process.argv.slice(2), env: process.env.NB_TEST }));
process.stderr.write('some stderr\\n');
// The scenario: a process that never exits by itself.
if (mode === 'hang') setInterval(() => {}, 1000);
else process.exit(Number(process.argv[3] ?? 0));
`,
    );
    await writeFile(join(dir, 'never-listens.mjs'), `setInterval(() => {}, 1000); // alive, never listening\n`);
    await writeFile(join(dir, 'crashes.mjs'), `console.error('boom: bad config'); process.exit(3);\n`);
  });

  it('writeYaml writes YAML the yaml package reads back', async () => {
    const value = { listen: '127.0.0.1:0', storages: [{ name: 'main', path: '/tmp/x' }], n: 3, on: true };
    const p = join(dir, 'nested', 'cfg.yaml');
    await writeYaml(p, value);
    assert.deepEqual(parseYaml(await readFile(p, 'utf8')), value);
  });

  it('startServer resolves on the listening log line, collects logs, and stops', async () => {
    const cfg = join(dir, 'cfg.yaml');
    await writeYaml(cfg, { hello: 'world' });
    const srv = await startServer(cfg, { script: join(dir, 'fake-server.mjs') });
    assert.ok(srv.port > 0);
    const greeting = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const s = net.connect(srv.port, '127.0.0.1');
        let d = '';
        s.on('data', (b) => (d += b.toString()));
        s.on('end', () => resolve(d));
        s.on('error', reject);
      }),
      5000,
      'fake server greeting',
    );
    assert.equal(greeting, 'hi');
    const tick = await srv.waitForLog((l) => l.msg === 'tick', 5000);
    assert.equal(tick.n, 1);
    assert.ok(srv.logs().some((l) => l.msg === 'starting' && l.config === 'hello: world'));
    assert.ok(srv.output().includes('out| not json'));
    await assert.rejects(srv.waitForLog((l) => l.msg === 'never', 100), /timed out after 100 ms/);
    await srv.stop();
    assert.equal(srv.proc.exitCode, 0);
    assert.ok(srv.logs().some((l) => l.msg === 'bye'));
  });

  it('stop escalates to SIGKILL', async () => {
    const srv = await startServer(join(dir, 'cfg.yaml'), { script: join(dir, 'fake-server.mjs'), env: { IGNORE_TERM: '1' } });
    const t0 = Date.now();
    await srv.stop(300);
    assert.equal(srv.proc.signalCode, 'SIGKILL');
    assert.ok(Date.now() - t0 < 3000);
  });

  it('startServer rejects with the output when the server exits or never listens', async () => {
    await assert.rejects(startServer(join(dir, 'cfg.yaml'), { script: join(dir, 'crashes.mjs') }), (err: Error) => {
      assert.match(err.message, /process ended before/);
      assert.match(err.message, /boom: bad config/);
      return true;
    });
    const t0 = Date.now();
    await assert.rejects(
      startServer(join(dir, 'cfg.yaml'), { script: join(dir, 'never-listens.mjs'), timeoutMs: 300 }),
      /timed out after 300 ms/,
    );
    assert.ok(Date.now() - t0 < 3000);
  });

  it('runAgent returns code, output and logs, and kills at the timeout', async () => {
    const r = await runAgent(['exit', '4'], { script: join(dir, 'fake-agent.mjs'), env: { NB_TEST: 'yes' } });
    assert.equal(r.code, 4);
    assert.equal(r.timedOut, false);
    assert.equal(r.stderr, 'some stderr\n');
    assert.deepEqual(r.logs[0], { msg: 'args', args: ['exit', '4'], env: 'yes' });
    const h = await runAgent(['hang'], { script: join(dir, 'fake-agent.mjs'), timeoutMs: 300 });
    assert.equal(h.timedOut, true);
    assert.equal(h.signal, 'SIGKILL');
    assert.equal(h.code, null);
  });

  it('spawnLogged exposes the generic machinery', async () => {
    const p = spawnLogged(process.execPath, ['-e', 'console.log(JSON.stringify({msg:"x",v:1}))']);
    const l = await p.waitForLog((x) => x.msg === 'x', 5000);
    assert.equal(l.v, 1);
    assert.deepEqual(await p.waitForExit(5000), { code: 0, signal: null });
  });
});

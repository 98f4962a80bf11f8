/**
 * Hostile and malformed clients against the real server over real mTLS on 127.0.0.1: who may
 * connect and what a handshake may say. After every negative case the same server must still
 * serve a well-behaved client. Sessions that go wrong are in security-sessions.test.ts.
 */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AckStatus, FinalStatus } from '../../protocol/constants.js';
import { decodeServerDataMessage, encodeSingleMode } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, type ServerHandle } from '../helpers/proc.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { committedBackups, listFilesRecursive, showRun, writeAgentConfig } from './harness.js';
import { trailerFor, type RawClient } from './raw-client.js';
import { AGENT_TIMEOUT_MS, SecurityBench } from './security-bench.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

describe('server security and robustness (real server, raw mTLS clients)', { timeout: 110_000 }, () => {
  const bench = new SecurityBench();
  const { client, handshake, expectRefused, finishSession, stillServes, goodAgentBackup } = bench;
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let base: string;
  let src: string;

  before(async () => {
    await bench.start('nbackup-it-sec-');
    ({ work, pki, server, base, src } = bench);
  });
  after(() => bench.stop());

  // ─── cases ────────────────────────────────────────────────────────────────────────────────

  it('serves a good backup and health check to begin with (control)', async () => {
    await stillServes();
    await goodAgentBackup();
  });

  it('a raw well-formed session is committed byte-exact, with SACKs (control for the raw client)', async () => {
    const MiB = 1024 * 1024;
    const body = randomBytesSeeded(3 * MiB + 999, 77); // any bytes: the server does not parse the body
    const { ack, c } = await handshake({ backup: 'raw-ok' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    assert.match(ack.sessionId, UUID_V4);
    c.write(encodeSingleMode());
    // Like an agent with a small ring buffer: after 1.5 MiB, send nothing more until a SACK says
    // at least 1 MiB is stored (spec: a SACK at least every 1 MiB received).
    const sacks: number[] = [];
    const waitSack = async (min: number): Promise<void> => {
      // Bounded in count too: a server that kept sending SACKs below `min` must not loop forever.
      for (let n = 0; sacks.length === 0 || sacks[sacks.length - 1] < min; n++) {
        if (n >= 1000) throw new Error(`no SACK of at least ${min} in ${n} messages: ${JSON.stringify(sacks.slice(-10))}`);
        const m = await c.read(decodeServerDataMessage, 5000, `a SACK of at least ${min}`);
        assert.equal(m.type, 'sack', `expected a SACK, got ${JSON.stringify(m)}`);
        if (m.type === 'sack') sacks.push(m.offset);
      }
    };
    c.write(body.subarray(0, 1.5 * MiB));
    await waitSack(MiB);
    assert.ok(sacks[sacks.length - 1] <= 1.5 * MiB, `SACK ${sacks[sacks.length - 1]} beyond the ${1.5 * MiB} bytes sent`);
    c.write(body.subarray(1.5 * MiB, 3 * MiB));
    await waitSack(2 * MiB);
    assert.ok(sacks[sacks.length - 1] <= 3 * MiB, `SACK ${sacks[sacks.length - 1]} beyond the ${3 * MiB} bytes sent`);
    const { sacks: late, final } = await finishSession(c, body.subarray(3 * MiB), trailerFor(body));
    assert.equal(final, FinalStatus.OK);
    const all = [...sacks, ...late];
    const total = body.length + 44;
    for (let i = 0; i < all.length; i++) {
      assert.ok(all[i] > 0 && all[i] <= total, `SACK offset ${all[i]} out of range`);
      if (i > 0) assert.ok(all[i] > all[i - 1], `SACK offsets must increase: ${JSON.stringify(all)}`);
    }
    const files = await committedBackups(join(base, 'agent-a', 'raw-ok'));
    assert.equal(files.length, 1);
    const stored = await readFile(join(base, 'agent-a', 'raw-ok', files[0]));
    assert.equal(stored.length, body.length, 'the trailer is not part of the stored file');
    assert.ok(stored.equals(body), 'stored bytes differ from the bytes sent');
    await stillServes();
  });

  it('(a) agent name ≠ certificate CN: the CLI refuses, and the server answers REJECT on the wire', async () => {
    // CLI: refuses before connecting.
    const cfg = join(work, 'agent-mismatch.yaml');
    await writeAgentConfig(cfg, pki, 'someone-else', server!.port, [{ name: 'app', storage: 'main', sources: [src] }], { certOf: 'agent-a' });
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.timedOut, false, showRun(r));
    assert.notEqual(r.code, 0, showRun(r));
    assert.ok(r.code !== null, showRun(r));
    assert.match(r.stderr, /someone-else/, showRun(r));
    assert.match(r.stderr, /CN|common name|certificate/i, showRun(r));

    // Wire: the server itself enforces it.
    const filesBefore = await listFilesRecursive(base);
    const a1 = await expectRefused({ agent: 'someone-else' }, AckStatus.REJECT, 'agent-a');
    assert.ok(a1.message.length > 0, 'a REJECT should say why');
    // Impersonation: agent-b's certificate claiming to be agent-a.
    await expectRefused({ agent: 'agent-a', backup: 'impersonated' }, AckStatus.REJECT, 'agent-b');
    assert.deepEqual(await listFilesRecursive(base), filesBefore, 'a refused handshake must not create files');
    for (const d of ['someone-else', 'agent-b']) {
      await assert.rejects(readdir(join(base, d)), { code: 'ENOENT' }, `no folder may be created for ${d}`);
    }
    assert.deepEqual(await committedBackups(join(base, 'agent-a', 'impersonated')), []);
    await stillServes();
  });

  it('(b) path-like names are REJECTed at the wire and create nothing', async () => {
    const cases: { storage?: string; backup?: string }[] = [
      { backup: '..' },
      { backup: '.' },
      { backup: '.hidden' },
      { backup: 'a/b' },
      { backup: '../../escape' },
      { backup: 'a\\b' },
      { backup: '' },
      { backup: 'x'.repeat(256) },
      { storage: '..' },
      { storage: '.' },
      { storage: '.hidden' },
      { storage: 'a/b' },
      { storage: '../main' },
    ];
    const filesBefore = await listFilesRecursive(base);
    const dirsBefore = (await readdir(base)).sort();
    for (const hs of cases) await expectRefused(hs, AckStatus.REJECT);
    // A refusal that quotes a long value still reaches the client, its message cut to fit a line.
    const quoted = await expectRefused({ format: 'z'.repeat(500) }, AckStatus.REJECT);
    assert.match(quoted.message, /^unknown archive format "z{400,}\.\.\.$/, quoted.message);
    // An unsupported protocol version is refused too.
    await expectRefused({ version: 0x01 }, AckStatus.REJECT);
    await expectRefused({ version: 0xff }, AckStatus.REJECT);
    assert.deepEqual(await listFilesRecursive(base), filesBefore, 'nothing may be written for a refused name');
    assert.deepEqual((await readdir(base)).sort(), dirsBefore, 'no folder may be created for a refused name');
    assert.deepEqual(
      (await readdir(join(base, 'agent-a'))).filter((n) => n.startsWith('.') || n === 'a' || n.includes('x'.repeat(200))),
      [],
      'no dot-folder or partial path may be created under the agent folder',
    );
    const top = (await readdir(work)).sort();
    assert.ok(!top.includes('escape') && !top.includes('a'), `nothing may be created beside the storage: ${top.join(', ')}`);
    await stillServes();
  });

  it('(c) an unknown storage gets STORAGE_NOT_FOUND, on the wire and from the CLI', async () => {
    await expectRefused({ storage: 'nope' }, AckStatus.STORAGE_NOT_FOUND);
    const cfg = join(work, 'agent-nostorage.yaml');
    await writeAgentConfig(cfg, pki, 'agent-a', server!.port, [{ name: 'app', storage: 'nope', sources: [src] }]);
    const r = await runAgent(['--config', cfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.notEqual(r.code, 0, showRun(r));
    assert.ok(r.code !== null, showRun(r));
    assert.match(r.stderr, /STORAGE_NOT_FOUND|not configured|storage/i, showRun(r));
    assert.match(r.stderr, /app/, showRun(r));
    await stillServes();
  });

  /** A client the server must refuse at the TLS level: no frame ever comes back. */
  async function expectTlsRefusal(c: RawClient): Promise<void> {
    // TLS 1.3: the client may believe the handshake succeeded; the server's alert shows on first read.
    await c.waitUntil(() => c.secure || c.closed, 5000, 'TLS handshake outcome');
    if (c.secure && !c.closed) c.write(Buffer.from('PING'));
    await c.waitClosed(5000);
    assert.equal(c.received.length, 0, `the server must not answer a refused client: ${c.describe()}`);
  }

  /** Waits for a server log line (warn or worse) logged after index `from` that matches `re`. */
  async function serverLogged(from: number, re: RegExp): Promise<void> {
    await server!.waitForLog((l) => server!.logs().indexOf(l) >= from && Number(l.level) >= 40 && re.test(JSON.stringify(l)), 5000);
  }

  it('(d) a client without a certificate, and one from a rogue CA, are refused', async () => {
    let from = server!.logs().length;
    const noCert = client({ as: null });
    await expectTlsRefusal(noCert);
    await serverLogged(from, /certificate|handshake/i);
    await stillServes();

    from = server!.logs().length;
    const rogue = client({ as: null, cert: pki.rogue.cert, key: pki.rogue.key });
    await expectTlsRefusal(rogue);
    await serverLogged(from, /certificate|unknown ca|verify|handshake/i);
    await stillServes();
  });

  it('(e) a client limited to TLS 1.2 is refused', async () => {
    const c = client({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    await c.waitClosed(5000);
    assert.equal(c.secure, false, 'a TLS 1.2 handshake must not complete');
    assert.ok(c.error, `expected a TLS error: ${c.describe()}`);
    assert.equal(c.received.length, 0);
    await stillServes();
  });

  it('(f) a 100 kB handshake line is cut off at once, without an ACK', async () => {
    const c = client();
    await c.connected();
    const sentAt = Date.now();
    c.write(Buffer.concat([Buffer.from('NBKP'), Buffer.of(0x02), Buffer.alloc(100_000, 'a')]));
    await c.waitClosed(5000);
    assert.equal(c.received.length, 0, `no ACK may be sent: ${c.describe()}`);
    // handshake_timeout is 2 s: closing this fast proves it was the line limit, not the timeout.
    assert.ok(c.closedAt - sentAt < 1500, `closed after ${c.closedAt - sentAt} ms`);
    await stillServes();

    // Not NBKP at all (an HTTP request): closed at once too.
    const h = client();
    await h.connected();
    const hAt = Date.now();
    h.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await h.waitClosed(5000);
    assert.equal(h.received.length, 0, h.describe());
    assert.ok(h.closedAt - hAt < 1500, `closed after ${h.closedAt - hAt} ms`);
    await stillServes();
  });

  it('(g) a stalled handshake is closed after handshake_timeout (2 s)', async () => {
    const c = client();
    await c.connected();
    c.write(Buffer.from('NBKP'));
    await c.waitClosed(8000);
    const elapsed = c.closedAt - c.secureAt;
    assert.ok(elapsed >= 1500 && elapsed <= 6000, `closed after ${elapsed} ms, expected ~2000`);
    assert.equal(c.received.length, 0, `no ACK may be sent: ${c.describe()}`);

    // Stalling after GO (no mode byte) is bounded too.
    const { ack, c: c2 } = await handshake({ backup: 'stall-after-go' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    await c2.waitClosed(8000);
    const e2 = c2.closedAt - c2.secureAt;
    assert.ok(e2 <= 6000, `closed after ${e2} ms`);
    assert.deepEqual(await committedBackups(join(base, 'agent-a', 'stall-after-go')), []);
    await stillServes();
  });
});

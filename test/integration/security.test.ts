/**
 * Hostile and malformed clients against the real server over real mTLS on 127.0.0.1. After every
 * negative case the same server must still serve a well-behaved client.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { AckStatus, FinalStatus, HealthStatus } from '../../protocol/constants.js';
import {
  decodeAck,
  decodeServerDataMessage,
  encodeHandshake,
  encodeSingleMode,
  encodeTrailer,
  type Ack,
  type ServerDataMessage,
} from '../../protocol/frames.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { runAgent, startServer, type AgentResult, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { compressibleText, randomBytesSeeded } from '../helpers/tree.js';
import {
  committedBackups,
  listFilesRecursive,
  pollUntil,
  rawConnect,
  rawHealth,
  sleep,
  writeAgentConfig,
  writeServerConfig,
  type RawClient,
  type RawOptions,
} from './harness.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
const AGENT_TIMEOUT_MS = 30_000;

function show(r: AgentResult): string {
  return `exit ${r.code} signal ${r.signal} timedOut ${r.timedOut}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

describe('server security and robustness (real server, raw mTLS clients)', { timeout: 110_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let fullServer: ServerHandle | undefined;
  /** A second server with idle_timeout 2 s and session_ttl 2 s, for abandoned sessions. */
  let restartServer: ServerHandle | undefined;
  let rBase: string;
  let restartYaml: string;
  let base: string;
  let src: string;
  let agentYaml: string;
  const opened: RawClient[] = [];

  before(async () => {
    work = await tmp.make('nbackup-it-sec-');
    pki = await makePki(join(work, 'pki'), { agents: ['agent-a', 'agent-b'] });
    base = join(work, 'storage');
    const serverYaml = join(work, 'server.yaml');
    await writeServerConfig(serverYaml, pki, { main: { base_dir: base, max_backups: 10 } });
    server = await startServer(serverYaml);
    src = join(work, 'src');
    await mkdir(join(src, 'dir'), { recursive: true });
    await writeFile(join(src, 'dir', 'hello.txt'), 'hello\n');
    await writeFile(join(src, 'data.bin'), randomBytesSeeded(200_000, 5));
    agentYaml = join(work, 'agent.yaml');
    await writeAgentConfig(agentYaml, pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [src] }]);
    rBase = join(work, 'storage-aux');
    restartYaml = join(work, 'server-aux.yaml');
    await writeServerConfig(restartYaml, pki, { main: { base_dir: rBase } }, { idle_timeout: '2s', session_ttl: '2s' });
    restartServer = await startServer(restartYaml);
  });

  after(async () => {
    for (const c of opened) c.destroy();
    await server?.stop();
    await fullServer?.stop();
    await restartServer?.stop();
    await tmp.cleanup();
  });

  // ─── helpers ──────────────────────────────────────────────────────────────────────────────

  function client(o: Partial<RawOptions> & { as?: string | null } = {}, port = server!.port): RawClient {
    const as = o.as === undefined ? 'agent-a' : o.as;
    const pair = as === null ? undefined : pki.agents[as];
    const c = rawConnect({ port, ca: pki.caCert, cert: pair?.cert, key: pair?.key, ...o });
    opened.push(c);
    return c;
  }

  /** Opens an mTLS connection as `as` and sends a handshake; returns the ACK and the client. */
  async function handshake(
    hs: { agent?: string; storage?: string; backup?: string; version?: number },
    as = 'agent-a',
    port = server!.port,
  ): Promise<{ ack: Ack; c: RawClient }> {
    const c = client({ as }, port);
    await c.connected();
    c.write(encodeHandshake({ agent: hs.agent ?? as, storage: hs.storage ?? 'main', backup: hs.backup ?? 'app', version: hs.version }));
    const ack = await c.read(decodeAck, 5000, 'ACK');
    return { ack, c };
  }

  /** A refused handshake: the status, no session id, and the server ends the connection. */
  async function expectRefused(
    hs: { agent?: string; storage?: string; backup?: string; version?: number },
    status: number,
    as = 'agent-a',
    port = server!.port,
  ): Promise<Ack> {
    const { ack, c } = await handshake(hs, as, port);
    assert.equal(ack.status, status, `handshake ${JSON.stringify(hs)} as ${as}: expected status ${status}, got ${ack.status} (${ack.message})`);
    assert.equal(ack.sessionId, '', 'a refusal carries no session id');
    await c.waitClosed(5000);
    return ack;
  }

  /** Sends body + trailer on a session that got GO, half-closes, returns SACKs and the final status. */
  async function finishSession(c: RawClient, body: Buffer, trailer: Buffer): Promise<{ sacks: number[]; final: number | null }> {
    c.write(body);
    c.write(trailer);
    c.socket.end();
    return readToFinal(c);
  }

  async function readToFinal(c: RawClient): Promise<{ sacks: number[]; final: number | null }> {
    const sacks: number[] = [];
    for (;;) {
      let msg: ServerDataMessage;
      try {
        msg = await c.read(decodeServerDataMessage, 10_000, 'SACK or Final ACK');
      } catch (err) {
        if (c.closed && c.unread.length === 0) return { sacks, final: null };
        throw err;
      }
      if (msg.type === 'sack') sacks.push(msg.offset);
      else return { sacks, final: msg.status };
    }
  }

  function trailerFor(data: Buffer, o: { sha?: Buffer; size?: number } = {}): Buffer {
    return encodeTrailer({ sha256: o.sha ?? createHash('sha256').update(data).digest(), size: o.size ?? data.length });
  }

  /** The server still serves: alive, answers a health check READY, and logs nothing fatal. */
  async function stillServes(): Promise<void> {
    assert.equal(server!.proc.exitCode, null, `server exited\n${server!.output().slice(-30).join('\n')}`);
    assert.equal(server!.proc.signalCode, null, 'server was killed');
    // READY once the previous case's connections are gone (BUSY while a session is still active).
    let pong = await rawHealth(server!.port, pki);
    for (let i = 0; i < 30 && pong.status === HealthStatus.BUSY; i++) {
      await sleep(100);
      pong = await rawHealth(server!.port, pki);
    }
    assert.equal(pong.status, HealthStatus.READY, `health status ${pong.status} (1 = BUSY: a session is still open)\n${serverTail()}`);
    assert.ok(pong.freeBytes > 0);
    assert.ok(!server!.logs().some((l) => typeof l.level === 'number' && l.level >= 60), 'server logged a fatal error');
  }

  function serverTail(n = 15): string {
    return `--- server output (last ${n} lines) ---\n${server!.output().slice(-n).join('\n')}`;
  }

  async function goodAgentBackup(): Promise<void> {
    const before = await committedBackups(join(base, 'agent-a', 'app'));
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.code, 0, `a good backup must still work\n${show(r)}`);
    const afterList = await committedBackups(join(base, 'agent-a', 'app'));
    assert.equal(afterList.length, before.length + 1, 'one more committed backup');
  }

  /**
   * No temporary file of a session that FINISHED (got its Final ACK). Sessions abandoned on purpose
   * (backup names in `abandoned`) may keep theirs for the resume TTL, so they are not looked at.
   */
  const abandoned = new Set(['stall-after-go', 'app-other']);
  async function noTmpAnywhere(): Promise<void> {
    const tmpFiles = async () =>
      (await listFilesRecursive(base)).filter((f) => f.endsWith('.tmp') && !abandoned.has(f.split('/')[1]));
    const ok = await pollUntil(async () => (await tmpFiles()).length === 0, 3000);
    assert.ok(ok, `temporary files left: ${JSON.stringify(await tmpFiles())}`);
  }

  const gzData = gzipSync(compressibleText(300_000, 11), { level: 1 });

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
      while (sacks.length === 0 || sacks[sacks.length - 1] < min) {
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
    assert.equal(r.timedOut, false, show(r));
    assert.notEqual(r.code, 0, show(r));
    assert.ok(r.code !== null, show(r));
    assert.match(r.stderr, /someone-else/, show(r));
    assert.match(r.stderr, /CN|common name|certificate/i, show(r));

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
    assert.notEqual(r.code, 0, show(r));
    assert.ok(r.code !== null, show(r));
    assert.match(r.stderr, /STORAGE_NOT_FOUND|not configured|storage/i, show(r));
    assert.match(r.stderr, /app/, show(r));
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

  it('(h) a second session for the same agent/storage/backup gets BUSY while one runs', async () => {
    const body = gzData;
    const { ack, c: first } = await handshake({ backup: 'app' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    first.write(encodeSingleMode());
    first.write(body.subarray(0, 1000));
    await sleep(100);

    const busy = await expectRefused({ backup: 'app' }, AckStatus.BUSY);
    assert.ok(busy.message.length > 0);
    // The real agent gets BUSY too, and says so.
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.notEqual(r.code, 0, show(r));
    assert.ok(r.code !== null, show(r));
    assert.match(r.stderr, /BUSY|already running/i, show(r));
    // A different backup of the same agent is not blocked.
    const other = await handshake({ backup: 'app-other' });
    assert.equal(other.ack.status, AckStatus.GO, other.ack.message);
    other.c.destroy();

    // The first session is unaffected: it completes and commits.
    const before = await committedBackups(join(base, 'agent-a', 'app'));
    const rest = body.subarray(1000);
    const { final } = await finishSession(first, rest, trailerFor(body));
    assert.equal(final, FinalStatus.OK);
    const afterList = await committedBackups(join(base, 'agent-a', 'app'));
    assert.equal(afterList.length, before.length + 1);
    const stored = await readFile(join(base, 'agent-a', 'app', afterList[afterList.length - 1]));
    assert.ok(stored.equals(body), 'the committed file is exactly the bytes of the first session');

    // Once it is done, the agent can back up again.
    await goodAgentBackup();
    await stillServes();
  });

  /** Runs a raw session that must not commit; checks nothing stays behind. */
  async function expectDiscarded(backup: string, body: Buffer, trailer: Buffer): Promise<void> {
    const { ack, c } = await handshake({ backup });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    const { final } = await finishSession(c, body, trailer);
    assert.equal(final, FinalStatus.CHECKSUM_MISMATCH, `${backup}: expected CHECKSUM_MISMATCH, got ${final}`);
    const dir = join(base, 'agent-a', backup);
    const clean = await pollUntil(async () => (await listFilesRecursive(dir)).length === 0, 3000);
    assert.ok(clean, `${backup}: files left after a failed session: ${JSON.stringify(await listFilesRecursive(dir))}`);
  }

  it('(i) a wrong SHA-256, a wrong size, or corrupted data is answered CHECKSUM_MISMATCH and discarded', async () => {
    const body = gzData;
    const badSha = createHash('sha256').update(body).digest();
    badSha[0] ^= 0xff;
    await expectDiscarded('corrupt-sha', body, trailerFor(body, { sha: badSha }));
    await stillServes();
    await expectDiscarded('corrupt-size-plus', body, trailerFor(body, { size: body.length + 1 }));
    await expectDiscarded('corrupt-size-minus', body, trailerFor(body, { size: body.length - 1 }));
    await stillServes();
    // Data corrupted in transit: one flipped bit, trailer computed over the original.
    const flipped = Buffer.from(body);
    flipped[Math.floor(flipped.length / 2)] ^= 0x01;
    await expectDiscarded('corrupt-data', flipped, trailerFor(body));
    await noTmpAnywhere();
    await stillServes();
  });

  /**
   * A stream that is half-closed (TLS close_notify + FIN) without a valid trailer: too short, or
   * a wrong trailer magic. It must never be committed nor answered OK; its temporary file must be
   * gone within session_ttl at the latest; and the agent must be able to start that backup over
   * at once. Runs on the aux server (session_ttl 2 s).
   */
  async function expectNoTrailer(backup: string, bytes: Buffer): Promise<void> {
    const port = restartServer!.port;
    const { ack, c } = await handshake({ backup }, 'agent-a', port);
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    if (bytes.length > 0) c.write(bytes);
    c.socket.end();
    const { final } = await readToFinal(c);
    assert.notEqual(final, FinalStatus.OK, `${backup}: a stream without a valid trailer was answered OK`);
    assert.ok(final === null || final === FinalStatus.CHECKSUM_MISMATCH, `${backup}: final status ${final}`);
    await c.waitClosed(5000);
    const dir = join(rBase, 'agent-a', backup);
    assert.deepEqual(await committedBackups(dir), [], `${backup}: must not be committed`);
    // Starting the same backup over must be possible right away (spec §2: "start a fresh session").
    const again = await handshake({ backup }, 'agent-a', port);
    assert.equal(again.ack.status, AckStatus.GO, `${backup}: a fresh session afterwards got status ${again.ack.status} (${again.ack.message})`);
    again.c.write(encodeSingleMode());
    const fin = await finishSession(again.c, gzData, trailerFor(gzData));
    assert.equal(fin.final, FinalStatus.OK, `${backup}: the fresh session must commit`);
    assert.equal((await committedBackups(dir)).length, 1);
    const clean = await pollUntil(async () => !(await listFilesRecursive(dir)).some((f) => f.endsWith('.tmp')), 6000);
    assert.ok(clean, `${backup}: temporary file outlived session_ttl (2 s): ${JSON.stringify(await listFilesRecursive(dir))}`);
  }

  it('(i2) a half-closed stream with no valid trailer (short, or wrong magic) is never committed and does not block the backup', async () => {
    const badMagic = Buffer.from(trailerFor(gzData));
    badMagic.write('DONX', 0, 'latin1');
    await expectNoTrailer('corrupt-magic', Buffer.concat([gzData, badMagic]));
    await expectNoTrailer('short-10', Buffer.alloc(10, 1));
    await expectNoTrailer('short-0', Buffer.alloc(0));
    // 43 bytes: one short of a trailer for empty data.
    await expectNoTrailer('short-43', trailerFor(Buffer.alloc(0)).subarray(0, 43));
    await stillServes();
  });

  it('(j) a storage below its min_free reserve answers FULL', async () => {
    const fullBase = join(work, 'storage-full');
    const cfg = join(work, 'server-full.yaml');
    await writeServerConfig(cfg, pki, { full: { base_dir: fullBase, max_backups: 3, min_free: '1000tb' } });
    fullServer = await startServer(cfg);
    await expectRefused({ storage: 'full', backup: 'app' }, AckStatus.FULL, 'agent-a', fullServer.port);
    const acfg = join(work, 'agent-full.yaml');
    await writeAgentConfig(acfg, pki, 'agent-a', fullServer.port, [{ name: 'app', storage: 'full', sources: [src] }]);
    const r = await runAgent(['--config', acfg, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.notEqual(r.code, 0, show(r));
    assert.ok(r.code !== null, show(r));
    assert.match(r.stderr, /FULL|free|reserve/i, show(r));
    assert.deepEqual(await listFilesRecursive(fullBase), [], 'nothing may be written to a full storage');
    const pong = await rawHealth(fullServer.port, pki);
    assert.equal(pong.status, HealthStatus.LOW_DISK, `health on a full storage: status ${pong.status}`);
    assert.equal(fullServer.proc.exitCode, null);
    await stillServes();
  });

  it('(k1) a body that stalls is closed after idle_timeout; its .tmp does not outlive session_ttl', async () => {
    const { ack, c } = await handshake({ backup: 'stall-ttl' }, 'agent-a', restartServer!.port);
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    c.write(gzData.subarray(0, 5000));
    const t0 = Date.now();
    await c.waitClosed(10_000);
    const idle = Date.now() - t0;
    assert.ok(idle >= 1500 && idle <= 7000, `a stalled body should be closed after ~2 s idle, took ${idle} ms`);
    const dir = join(rBase, 'agent-a', 'stall-ttl');
    assert.deepEqual(await committedBackups(dir), []);
    const gone = await pollUntil(async () => (await listFilesRecursive(dir)).length === 0, 6000);
    assert.ok(gone, `temporary file of an abandoned session outlived session_ttl (2 s): ${JSON.stringify(await listFilesRecursive(dir))}`);
    assert.equal((await rawHealth(restartServer!.port, pki)).status, HealthStatus.READY, 'READY once the session is gone');
  });

  it('(k2) after a connection breaks mid-body, a NEW session of the same backup is accepted (not BUSY)', async () => {
    const port = restartServer!.port;
    const { ack, c } = await handshake({ backup: 'start-over' }, 'agent-a', port);
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    c.write(gzData.subarray(0, 5000));
    await sleep(300);
    c.reset(); // the link dies (RST), as when a resume is impossible and the agent starts over
    await c.waitClosed(5000);
    await sleep(300);
    // Spec §2: when resuming is impossible the agent "must start a fresh session".
    const again = await handshake({ backup: 'start-over' }, 'agent-a', port);
    assert.equal(again.ack.status, AckStatus.GO, `a fresh session after a broken one got status ${again.ack.status} (${again.ack.message})`);
    const { final } = await finishSession((again.c.write(encodeSingleMode()), again.c), gzData, trailerFor(gzData));
    assert.equal(final, FinalStatus.OK);
    const files = await committedBackups(join(rBase, 'agent-a', 'start-over'));
    assert.equal(files.length, 1);
    assert.ok((await readFile(join(rBase, 'agent-a', 'start-over', files[0]))).equals(gzData));
  });

  it('(k3) a server restart removes the temporary file of a session cut by a crash', async () => {
    const s2 = await handshake({ backup: 'killed' }, 'agent-a', restartServer!.port);
    assert.equal(s2.ack.status, AckStatus.GO, s2.ack.message);
    s2.c.write(encodeSingleMode());
    s2.c.write(gzData.subarray(0, 20_000));
    const dir = join(rBase, 'agent-a', 'killed');
    const hasTmp = await pollUntil(async () => (await listFilesRecursive(dir)).some((f) => f.endsWith('.tmp')), 3000);
    assert.ok(hasTmp, `expected a temporary file while the session runs: ${JSON.stringify(await listFilesRecursive(dir))}`);
    restartServer!.proc.kill('SIGKILL');
    await restartServer!.waitForExit(5000);
    s2.c.destroy();
    assert.ok((await listFilesRecursive(dir)).some((f) => f.endsWith('.tmp')), 'precondition: the orphan is there');
    restartServer = await startServer(restartYaml);
    assert.deepEqual(await listFilesRecursive(dir), [], 'the restarted server must remove the orphan temporary file');
    assert.equal((await rawHealth(restartServer.port, pki)).status, HealthStatus.READY);
    await stillServes();
  });

  it('after all of the above: the server still takes a good backup, and no temporary file is left', async () => {
    await goodAgentBackup();
    await noTmpAnywhere();
    await stillServes();
  });
});

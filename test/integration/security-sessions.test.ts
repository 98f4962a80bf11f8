/**
 * Sessions that go wrong against the real server over real mTLS on 127.0.0.1: a second session
 * while one runs, bad trailers, a full storage, stalled, broken and crashed sessions. After every
 * negative case the same server must still serve a well-behaved client. Who may connect and what
 * a handshake may say is in security.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { AckStatus, FinalStatus, HealthStatus, ReadStatus, ReadTarget } from '../../protocol/constants.js';
import { decodeReadHead, encodeReadRequest, encodeSingleMode } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, type ServerHandle } from '../helpers/proc.js';
import { compressibleText } from '../helpers/tree.js';
import { pollUntil } from '../helpers/wait.js';
import { committedBackups, listFilesRecursive, showRun, tmpFiles, waitForTempBytes, writeAgentConfig, writeServerConfig } from './harness.js';
import { rawAgent, rawHealth, trailerFor } from './raw-client.js';
import { AGENT_TIMEOUT_MS, SecurityBench } from './security-bench.js';

describe('server security and robustness (real server, raw mTLS clients)', { timeout: 110_000 }, () => {
  const bench = new SecurityBench();
  const { handshake, expectRefused, readToFinal, finishSession, stillServes, goodAgentBackup } = bench;
  let work: string;
  let pki: Pki;
  let base: string;
  let src: string;
  let agentYaml: string;
  let fullServer: ServerHandle | undefined;
  /** A second server with idle_timeout 2 s and session_ttl 2 s, for abandoned sessions. */
  let restartServer: ServerHandle | undefined;
  let rBase: string;
  let restartYaml: string;

  before(async () => {
    await bench.start('nbackup-it-secs-');
    ({ work, pki, base, src, agentYaml } = bench);
    rBase = join(work, 'storage-aux');
    restartYaml = join(work, 'server-aux.yaml');
    await writeServerConfig(restartYaml, pki, { main: { base_dir: rBase } }, { idle_timeout: '2s', session_ttl: '2s' });
    restartServer = await startServer(restartYaml);
  });

  after(() => bench.stop([fullServer, restartServer]));

  /**
   * No temporary file of a session that FINISHED (got its Final ACK). Sessions abandoned on purpose
   * (backup names in `abandoned`) may keep theirs for the resume TTL, so they are not looked at.
   */
  const abandoned = new Set(['stall-after-go', 'app-other']);
  async function noTmpAnywhere(): Promise<void> {
    const finished = async () => (await tmpFiles(base)).filter((f) => !abandoned.has(f.split('/')[1]));
    const ok = await pollUntil(async () => (await finished()).length === 0, 3000);
    assert.ok(ok, `temporary files left: ${JSON.stringify(await finished())}`);
  }

  const gzData = gzipSync(compressibleText(300_000, 11), { level: 1 });

  // ─── cases ────────────────────────────────────────────────────────────────────────────────

  it('(h) a second session for the same agent/storage/backup gets BUSY while one runs', async () => {
    const body = gzData;
    const { ack, c: first } = await handshake({ backup: 'app' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    first.write(encodeSingleMode());
    first.write(body.subarray(0, 1000));
    // The server has taken the mode byte and written those bytes: the first session is mid-body.
    await waitForTempBytes(join(base, 'agent-a', 'app'), ack.sessionId, 1000);

    const busy = await expectRefused({ backup: 'app' }, AckStatus.BUSY);
    assert.ok(busy.message.length > 0);
    // The real agent gets BUSY too, and says so.
    const r = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.notEqual(r.code, 0, showRun(r));
    assert.ok(r.code !== null, showRun(r));
    assert.match(r.stderr, /BUSY|already running/i, showRun(r));
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
    const clean = await pollUntil(async () => (await tmpFiles(dir)).length === 0, 6000);
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
    assert.notEqual(r.code, 0, showRun(r));
    assert.ok(r.code !== null, showRun(r));
    assert.match(r.stderr, /FULL|free|reserve/i, showRun(r));
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
    // Mid-body: the server has written what was sent.
    await waitForTempBytes(join(rBase, 'agent-a', 'start-over'), ack.sessionId, 5000);
    c.reset(); // the link dies (RST), as when a resume is impossible and the agent starts over
    await c.waitClosed(5000);
    // The server has seen the break: the session now waits, detached, for a resume.
    await restartServer!.waitForLog((l) => l.msg === 'connection lost; session kept for resume' && l.session === ack.sessionId, 5000);
    // Spec §2: when resuming is impossible the agent "must start a fresh session".
    const again = await handshake({ backup: 'start-over' }, 'agent-a', port);
    assert.equal(again.ack.status, AckStatus.GO, `a fresh session after a broken one got status ${again.ack.status} (${again.ack.message})`);
    const { final } = await finishSession((again.c.write(encodeSingleMode()), again.c), gzData, trailerFor(gzData));
    assert.equal(final, FinalStatus.OK);
    const files = await committedBackups(join(rBase, 'agent-a', 'start-over'));
    assert.equal(files.length, 1);
    assert.ok((await readFile(join(rBase, 'agent-a', 'start-over', files[0]))).equals(gzData));
  });

  it('(k2b) a READ whose client stops taking bytes is closed after idle_timeout, and the server serves on', async () => {
    const dir = join(rBase, 'agent-a', 'read-stall');
    await mkdir(dir, { recursive: true });
    const name = '2026-01-01T00-00-00-000.tar.gz';
    await writeFile(join(dir, name), '');
    await truncate(join(dir, name), 64 << 20); // far more than the sockets' buffers hold
    const c = rawAgent(restartServer!.port, pki);
    try {
      await c.connected();
      c.write(encodeReadRequest({ agent: 'agent-a', storage: 'main', backup: 'read-stall', name, target: ReadTarget.ARCHIVE, offset: 0, length: 0 }));
      const head = await c.read(decodeReadHead, 5000, 'READ head');
      assert.equal(head.status, ReadStatus.OK, head.message);
      c.socket.pause();
      const t0 = Date.now();
      await restartServer!.waitForLog((l) => l.msg === 'connection closed' && /the reader took nothing for 2 s/.test(String(l.err)), 10_000);
      const waited = Date.now() - t0;
      assert.ok(waited >= 1500, `closed after ${waited} ms, before idle_timeout (2 s)`);
      c.socket.resume();
      await c.waitClosed(5000);
      assert.ok(c.received.length < 64 << 20, 'the client never took the whole file');
    } finally {
      c.destroy();
    }
    assert.equal((await rawHealth(restartServer!.port, pki)).status, HealthStatus.READY, 'the server still serves');
  });

  it('(k3) a server restart removes the temporary file of a session cut by a crash, once older than session_ttl', async () => {
    const s2 = await handshake({ backup: 'killed' }, 'agent-a', restartServer!.port);
    assert.equal(s2.ack.status, AckStatus.GO, s2.ack.message);
    s2.c.write(encodeSingleMode());
    s2.c.write(gzData.subarray(0, 20_000));
    const dir = join(rBase, 'agent-a', 'killed');
    const hasTmp = await pollUntil(async () => (await tmpFiles(dir)).length > 0, 3000);
    assert.ok(hasTmp, `expected a temporary file while the session runs: ${JSON.stringify(await listFilesRecursive(dir))}`);
    restartServer!.proc.kill('SIGKILL');
    await restartServer!.waitForExit(5000);
    s2.c.destroy();
    assert.ok((await tmpFiles(dir)).length > 0, 'precondition: the orphan is there');
    // A session younger than session_ttl (2 s) is taken up by the next server (restart.test.ts);
    // one older than that is an orphan. Wait until the file's last write is that old.
    const temp = join(dir, (await tmpFiles(dir)).find((f) => f.endsWith('.tar.gz.tmp'))!);
    const old = await pollUntil(async () => Date.now() - (await stat(temp)).mtimeMs > 2500, 6000);
    assert.ok(old, 'the temporary file ages past session_ttl');
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

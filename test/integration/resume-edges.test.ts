/**
 * Resume edge cases (spec §1–2): a cut inside the 44-byte trailer, a resume offset that has left
 * the agent's ring buffer, the server's ResumeACK after a cut inside the trailer, SACKs after the
 * agent's half-close, and the Final ACK of a failed session after those SACKs.
 *
 * Cuts at exact plaintext offsets come from a TLS-terminating proxy (test/helpers/tls-proxy.ts)
 * between the real agent and the real server; the server-side cases use a raw mTLS client that
 * speaks the frames of protocol/frames.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AckStatus, FinalStatus, ResumeStatus, TRAILER_SIZE } from '../../protocol/constants.js';
import { decodeResumeAck, encodeHandshake, encodeResume, encodeSingleMode } from '../../protocol/frames.js';
import { MIN_CHUNK_SIZE } from '../../protocol/constants.js';
import { RESUME_BUFFER_MIN } from '../../src/config/schema.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { startTlsProxy, tlsProxyMaterial, type TlsConnPlan, type TlsProxy } from '../helpers/tls-proxy.js';
import { randomBytesSeeded, type TreeInfo } from '../helpers/tree.js';
import { pollUntil } from '../helpers/wait.js';
import { committedBackups, logsWith, makeSource, makeWorkspace, oneLog, restoreTheBackup, startEnv, tmpFiles, writeAppAgentYaml } from './harness.js';
import { parseServerMessages, rawAgent, rawHandshake, readUntilFinal, sha256, trailerFor, type RawClient } from './raw-client.js';

const tmp = new TempDirs();
let pki: Pki;
let tree: TreeInfo;
const MiB = 1024 * 1024;

before(async () => {
  const ws = await makeWorkspace(tmp, 'nbk-redge-', ['agent-a']);
  pki = ws.pki;
  // 8 MiB that does not compress: a compressed stream of ~12 MB, long enough to cut well past a
  // 1 MiB ring buffer, short enough to keep the file fast.
  tree = await makeSource(path.join(ws.work, 'src'), { files: 2, size: 4 * MiB, seed: 200 });
});
after(() => tmp.cleanup());

// ─── shared set-up ────────────────────────────────────────────────────────────────────────────

const setup = (name: string) => startEnv(tmp, pki, `nbk-redge-${name}-`);

async function proxyFor(server: ServerHandle, plan: TlsConnPlan[]): Promise<TlsProxy> {
  return startTlsProxy({ target: { host: '127.0.0.1', port: server.port }, tls: tlsProxyMaterial(pki, 'agent-a'), plan });
}

const RETRY = { max_attempts: 6, initial_delay: '100ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '5s' };

/** NBKP handshake as agent-a up to ACK GO; returns the session ID (the mode byte is the caller's). */
async function handshake(c: RawClient, backup: string): Promise<string> {
  const ack = await rawHandshake(c, { agent: 'agent-a', backup });
  assert.equal(ack.status, AckStatus.GO, `ACK ${ack.status} ${ack.message}`);
  assert.match(ack.sessionId, /^[0-9a-f-]{36}$/);
  return ack.sessionId;
}

// ─── a. cut inside the trailer (real agent) ──────────────────────────────────────────────────

test('a cut inside the trailer: the agent resumes and resends only the missing trailer bytes', { timeout: 60_000 }, async () => {
  const env = await setup('trailer');
  const { server } = env;
  // The server gets everything but the last 20 plaintext bytes, i.e. all the data and 24 of the
  // 44 trailer bytes; at the agent's half-close both sides are reset.
  const proxy = await proxyFor(server, [{ holdBackAtClientEnd: 20 }]);
  try {
    const cfg = await writeAppAgentYaml(env.dir, pki, proxy.port, tree, { retry: RETRY, resume: { buffer_size: '16mb', chunk_size: '1mb' } });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 45_000 });
    const all = run.stdout + run.stderr;
    assert.equal(run.code, 0, all);
    const { file } = await restoreTheBackup(env, tree);
    const size = fs.statSync(file).size;

    // The proxy's view: the first connection carried handshake + mode + data + 24 trailer bytes.
    // …and after the commit, the index goes on a connection of its own.
    assert.equal(proxy.connections, 3, `connections: ${proxy.conns.map((c) => `${c.kind}:${c.state}`).join(', ')}`);
    assert.equal(proxy.conns[2].kind, 'IDXP');
    const [first, second] = proxy.conns;
    const session = String(oneLog(run.logs, 'backup started', all).session);
    const hsLen = encodeHandshake({ agent: 'agent-a', storage: 'main', backup: 'app' }).length;
    assert.equal(first.kind, 'NBKP');
    assert.equal(first.state, 'reset');
    assert.equal(first.bytesDropped, 20);
    assert.equal(first.flushedBeforeReset, true, 'the server had every forwarded byte before the reset');
    assert.equal(first.bytesClientToServer, hsLen + 1 + size + 24);
    // The resume connection carried the RSME hello and exactly the 20 missing trailer bytes.
    assert.equal(second.kind, 'RSME');
    assert.equal(
      second.bytesClientToServer,
      encodeResume({ sessionId: session, agent: 'agent-a', storage: 'main' }).length + 20,
      `proxy: ${JSON.stringify(proxy.conns)}\nagent:\n${all}\nserver:\n${server.output().join('\n')}`,
    );

    // The server resumed at exactly what it had written: every data byte plus the 24 trailer
    // bytes. That is the true value, not just "> size": the server cannot tell trailer from data
    // until EOF, so it writes the partial trailer to the temporary file like any body byte, and
    // body offsets count trailer bytes too (spec §1, SACK); the proxy confirmed all 24 reached
    // the server before the reset (flushedBeforeReset). The file is cut before the trailer at
    // commit, so the committed size is the data size.
    const srvResumed = server.logs().filter((l) => l.msg === 'session resumed');
    assert.equal(srvResumed.length, 1, server.output().join('\n'));
    assert.equal(Number(srvResumed[0].lastOffset), size + 24);
    assert.ok(Number(srvResumed[0].lastOffset) > size);
    const agResumed = oneLog(run.logs, 'session resumed', all);
    assert.equal(Number(agResumed.lastOffset), size + 24);
    assert.equal(Number(agResumed.resending), 20);

    const committed = oneLog(run.logs, 'backup committed', all);
    assert.equal(committed.bytes, size);
    assert.equal(committed.reconnects, 1);
    assert.equal(committed.bytesResent, 20);
    assert.equal(committed.bytesSent, size + TRAILER_SIZE + 20, 'every body byte once, plus the 20 trailer bytes again');
    assert.equal(logsWith(run.logs, 'starting a new session from the beginning').length, 0, 'no restart from zero');
    const srvCommitted = server.logs().filter((l) => l.msg === 'session committed');
    assert.equal(srvCommitted.length, 1);
    assert.equal(srvCommitted[0].resumes, 1);
    assert.equal(srvCommitted[0].session, session);
  } finally {
    await proxy.close();
    await server.stop();
  }
});

// ─── b. the resume offset has left the ring buffer (real agent) ──────────────────────────────

test('a resume offset that has left the ring buffer: the agent says so and starts a new session', { timeout: 60_000 }, async () => {
  const env = await setup('ring');
  const { store, server } = env;
  const cut = 6_000_000; // plaintext bytes on the first connection: ~6x the ring buffer
  const proxy = await proxyFor(server, [{ resetAfterPlaintextBytes: cut }, { rewriteResumeOffset: 0 }]);
  try {
    const cfg = await writeAppAgentYaml(env.dir, pki, proxy.port, tree, {
      retry: RETRY,
      resume: { buffer_size: RESUME_BUFFER_MIN, chunk_size: MIN_CHUNK_SIZE },
    });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 45_000 });
    const all = run.stdout + run.stderr;
    assert.equal(run.code, 0, all);

    const restart = oneLog(run.logs, 'starting a new session from the beginning', all);
    assert.match(String(restart.reason), /resume offset 0 has already left the ring buffer/);
    assert.match(String(restart.reason), /buffer_size is too small/);

    // Connections: the cut NBKP, the RSME whose answer was rewritten, the fresh NBKP, the index.
    assert.equal(proxy.connections, 4, `connections: ${proxy.conns.map((c) => `${c.kind}:${c.state}`).join(', ')}`);
    assert.equal(proxy.conns[3].kind, 'IDXP');
    const [first, resume, fresh] = proxy.conns;
    assert.equal(first.kind, 'NBKP');
    assert.equal(first.state, 'reset');
    assert.equal(first.bytesClientToServer, cut);
    assert.equal(first.flushedBeforeReset, true);
    assert.equal(resume.kind, 'RSME');
    assert.ok(resume.resumeAck, 'the proxy saw a ResumeACK');
    assert.equal(resume.resumeAck.status, ResumeStatus.OK, 'the server could have resumed');
    assert.ok(resume.resumeAck.lastOffset > RESUME_BUFFER_MIN, `server offset ${resume.resumeAck.lastOffset}`);
    assert.equal(resume.resumeAck.rewrittenTo, 0);
    assert.equal(fresh.kind, 'NBKP');

    // The store ends with one committed file and no temporary file (the superseded session's
    // is deleted by the server; give it a few seconds).
    assert.ok(await pollUntil(async () => (await tmpFiles(store)).length === 0, 5000), `left: ${(await tmpFiles(store)).join(', ')}`);
    const { file } = await restoreTheBackup(env, tree);
    assert.ok(fs.statSync(file).size > cut + 2 * MiB, 'the stream is long enough for the cut to matter');

    const sessions = logsWith(run.logs, 'backup started').map((l) => String(l.session));
    assert.equal(sessions.length, 2, all);
    assert.notEqual(sessions[0], sessions[1]);
    const discarded = server.logs().filter((l) => l.msg === 'session discarded');
    assert.ok(
      discarded.some((l) => l.session === sessions[0] && /superseded/.test(String(l.reason))),
      `server discarded: ${JSON.stringify(discarded)}`,
    );
    const committed = server.logs().filter((l) => l.msg === 'session committed');
    assert.equal(committed.length, 1);
    assert.equal(committed[0].session, sessions[1]);
  } finally {
    await proxy.close();
    await server.stop();
  }
});

// ─── c. server: ResumeACK after a cut inside the trailer (raw client) ────────────────────────

test('server: a connection cut inside the trailer resumes at the bytes written, and commits the data exactly', { timeout: 60_000 }, async () => {
  const { store, server } = await setup('raw-trailer');
  const D = randomBytesSeeded(2 * MiB, 31);
  const body = Buffer.concat([D, trailerFor(D)]);
  const c1 = rawAgent(server.port, pki);
  let c2: RawClient | undefined;
  try {
    const sessionId = await handshake(c1, 'rawtrailer');
    await c1.writeFlushed(Buffer.concat([encodeSingleMode(), body.subarray(0, D.length + 20)]));
    // Let the server catch up before the cut, so the test does not depend on how fast it reads:
    // the reference server acknowledges a quiet stream after 250 ms; if it never does, 3 s are
    // plenty for 2 MiB on loopback anyway.
    await c1
      .waitUntil(() => parseServerMessages(c1.unread).some((m) => m.type === 'sack' && m.offset >= D.length + 20), 3000, 'a SACK of everything')
      .catch(() => undefined);
    const sacks1 = parseServerMessages(c1.unread).map((m) => {
      assert.equal(m.type, 'sack', 'only SACKs before the trailer is complete');
      return m.type === 'sack' ? m.offset : -1;
    });
    c1.destroy();
    await c1.waitClosed(5000);

    c2 = rawAgent(server.port, pki);
    await c2.connected();
    c2.write(encodeResume({ sessionId, agent: 'agent-a', storage: 'main' }));
    const ra = await c2.read(decodeResumeAck, 5000, 'ResumeACK');
    assert.equal(ra.status, ResumeStatus.OK);
    const last = ra.lastOffset;
    assert.ok(last >= D.length && last <= D.length + 20, `lastOffset ${last} not in [${D.length}, ${D.length + 20}]`);
    assert.ok(sacks1.length >= 1, 'at least one SACK for 2 MiB (one every 1 MiB)');
    assert.ok(
      sacks1.every((o) => o <= last),
      `a SACK (${sacks1.join(',')}) acknowledged more than the server resumed at (${last})`,
    );
    const logged = await server.waitForLog((l) => l.msg === 'session resumed' && l.session === sessionId, 5000);
    assert.equal(Number(logged.lastOffset), last);

    c2.socket.end(body.subarray(last));
    const { sacks, final } = await readUntilFinal(c2);
    assert.equal(final, FinalStatus.OK);
    assert.ok(sacks.every((o, i) => o > last && o <= body.length && (i === 0 || o >= sacks[i - 1])), `SACKs ${sacks.join(',')}`);

    const dir = path.join(store, 'agent-a', 'rawtrailer');
    const files = await committedBackups(dir);
    assert.equal(files.length, 1);
    const stored = fs.readFileSync(path.join(dir, files[0]));
    assert.equal(stored.length, D.length);
    assert.ok(stored.equals(D), 'the committed file is D, byte for byte');
    assert.deepEqual(await tmpFiles(store), []);
  } finally {
    c1.destroy();
    c2?.destroy();
    await server.stop();
  }
});

// ─── d. server: SACKs after the half-close (raw client) ──────────────────────────────────────

test('server: SACKs continue after the half-close, up to at least the data size, before the Final ACK', { timeout: 60_000 }, async () => {
  const { store, server } = await setup('raw-sack');
  const data = randomBytesSeeded(3 * MiB, 41);
  const trailer = trailerFor(data);
  const rounds = 8;
  const started = Date.now();
  try {
    for (let i = 0; i < rounds; i++) {
      assert.ok(Date.now() - started < 40_000, `round ${i} started after ${Date.now() - started} ms`);
      const backup = `sack${i}`;
      const c = rawAgent(server.port, pki);
      try {
        await handshake(c, backup);
        // Mode byte, 3 MiB of data and the trailer in one write, and the half-close right after.
        c.socket.write(Buffer.concat([encodeSingleMode(), data, trailer]));
        c.socket.end();
        const { sacks, final } = await readUntilFinal(c);
        assert.equal(final, FinalStatus.OK, `round ${i}`);
        assert.ok(sacks.length >= 1, `round ${i}: no SACK before the Final ACK`);
        const lastSack = sacks[sacks.length - 1];
        assert.ok(lastSack >= data.length, `round ${i}: last SACK before the Final ACK is ${lastSack}, below the ${data.length} data bytes (SACKs: ${sacks.join(',')})`);
        assert.ok(
          sacks.every((o, k) => o <= data.length + TRAILER_SIZE && (k === 0 || o > sacks[k - 1])),
          `round ${i}: SACKs ${sacks.join(',')}`,
        );
        await c.waitClosed(5000);
      } finally {
        c.destroy();
      }
      const files = await committedBackups(path.join(store, 'agent-a', backup));
      assert.equal(files.length, 1, `round ${i}`);
      assert.equal(fs.statSync(path.join(store, 'agent-a', backup, files[0])).size, data.length);
    }
  } finally {
    await server.stop();
  }
});

// ─── e. server: the SACKs after the half-close must not cost a failed session its Final ACK ──

test('server: a bad trailer after the half-close SACKs is still answered CHECKSUM_MISMATCH, then discarded', { timeout: 60_000 }, async () => {
  const { store, server } = await setup('raw-mismatch');
  try {
    for (const [i, size] of [300_000, 3 * MiB].entries()) {
      const backup = `mismatch${i}`;
      const data = randomBytesSeeded(size, 51 + i);
      const badSha = sha256(data);
      badSha[0] ^= 0xff;
      const c = rawAgent(server.port, pki);
      try {
        await handshake(c, backup);
        c.socket.write(Buffer.concat([encodeSingleMode(), data, trailerFor(data, { sha: badSha })]));
        c.socket.end();
        const { sacks, final } = await readUntilFinal(c);
        // Spec §1: Final ACK 0x01 CHECKSUM_MISMATCH (file discarded). Without it the agent sees a
        // lost connection, resumes, is told NOT_FOUND and re-sends the whole backup from zero.
        assert.equal(
          final,
          FinalStatus.CHECKSUM_MISMATCH,
          `${backup} (${size} bytes): Final ACK ${final === null ? 'missing: the server closed the connection after SACKs ' + sacks.join(',') : final}`,
        );
        await c.waitClosed(5000);
      } finally {
        c.destroy();
      }
      assert.deepEqual(await committedBackups(path.join(store, 'agent-a', backup)), []);
      assert.ok(await pollUntil(async () => (await tmpFiles(store)).length === 0, 3000), 'temporary file discarded');
    }
  } finally {
    await server.stop();
  }
});

// ─── f. server: a resumed session under max_concurrent_sessions ──────────────────────────────

test('server: a resumed session holds its slot again: at max_concurrent_sessions 1 a new session waits until it commits', { timeout: 60_000 }, async () => {
  const { store, server } = await startEnv(tmp, pki, 'nbk-redge-slot-', { server: { max_concurrent_sessions: 1 } });
  const D = randomBytesSeeded(256 * 1024, 41);
  const clients: RawClient[] = [];
  const open = (): RawClient => {
    const c = rawAgent(server.port, pki);
    clients.push(c);
    return c;
  };
  try {
    const c1 = open();
    const sessionId = await handshake(c1, 'slot-a');
    await c1.writeFlushed(Buffer.concat([encodeSingleMode(), D.subarray(0, 1000)]));
    c1.reset();
    await server.waitForLog((l) => l.msg === 'connection lost; session kept for resume' && l.session === sessionId, 5000);
    // Resumed: always let in, and from then on it counts like any running session.
    const c2 = open();
    await c2.connected();
    c2.write(encodeResume({ sessionId, agent: 'agent-a', storage: 'main' }));
    const ra = await c2.read(decodeResumeAck, 5000, 'ResumeACK');
    assert.equal(ra.status, ResumeStatus.OK);
    const waiting = await rawHandshake(open(), { agent: 'agent-a', backup: 'slot-b' });
    assert.equal(waiting.status, AckStatus.WAIT, `a second session while the resumed one runs: ${waiting.status} ${waiting.message}`);
    c2.socket.end(Buffer.concat([D, trailerFor(D)]).subarray(ra.lastOffset));
    assert.equal((await readUntilFinal(c2)).final, FinalStatus.OK);
    // Its slot is free again once it committed.
    const c3 = open();
    await handshake(c3, 'slot-b');
    assert.equal((await committedBackups(path.join(store, 'agent-a', 'slot-a'))).length, 1);
  } finally {
    for (const c of clients) c.destroy();
    await server.stop();
  }
});

/**
 * The agent against a server that lies: a TLS server made in the test, with a certificate of the
 * test's CA, that speaks just enough of the protocol to tell the agent something it must not
 * believe. The agent must fail the backup, never report it committed.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { AckStatus, FinalStatus } from '../../protocol/constants.js';
import { decodeClientHello, encodeAck, encodeControlFromServer, encodeFinalAck } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, runAgent, writeYaml, type AgentResult } from '../helpers/proc.js';
import { spawn } from 'node:child_process';
import { TempDirs } from '../helpers/tmp.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { startTlsProxy, tlsProxyMaterial, type TlsConnPlan, type TlsProxy } from '../helpers/tls-proxy.js';
import { agentConfigObject, makeWorkspace, showRun, startEnv, type Env } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-liar-', ['agent-a']));
  fs.mkdirSync(join(work, 'src'));
  // Several MiB that do not compress: the agent is still sending when the lie comes.
  fs.writeFileSync(join(work, 'src', 'data.bin'), randomBytesSeeded(8 << 20, 5));
});
after(() => tmp.cleanup());

/** A server that answers every session handshake GO and, right after it, Final ACK OK. */
async function earlyOkServer(): Promise<{ port: number; sessions: string[]; close: () => void }> {
  const sessions: string[] = [];
  const server = tls.createServer(
    { key: fs.readFileSync(pki.serverKey), cert: fs.readFileSync(pki.serverCert), ca: fs.readFileSync(pki.caCert), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    (socket) => {
      let buf: Buffer | null = Buffer.alloc(0);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        if (buf === null) return; // answered: the rest is read and dropped
        buf = Buffer.concat([buf, chunk]);
        const hello = decodeClientHello(buf);
        if (!hello) return;
        buf = null;
        if (hello.value.kind !== 'NBKP') return void socket.destroy();
        const id = randomUUID();
        sessions.push(id);
        const version = hello.value.value.version;
        socket.write(Buffer.concat([encodeAck({ status: AckStatus.GO, message: '', sessionId: id }), encodeFinalAck({ status: FinalStatus.OK, message: '' }, version)]));
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return { port, sessions, close: () => server.close() };
}

test('a Final ACK OK before the trailer was sent is a protocol error: the backup fails, nothing is reported committed', { timeout: 60_000 }, async () => {
  const liar = await earlyOkServer();
  try {
    const yaml = join(work, 'agent.yaml');
    await writeYaml(yaml, agentConfigObject(pki, 'agent-a', liar.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]));
    const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 45_000 });
    assert.equal(liar.sessions.length >= 1, true, `the agent reached the server\n${showRun(r)}`);
    assert.equal(r.code, 1, showRun(r));
    assert.match(r.stderr, /backup "app" failed: .*answered 0 \(committed\) before the trailer was sent/, showRun(r));
    assert.ok(!r.logs.some((l) => l.msg === 'backup committed'), showRun(r));
  } finally {
    liar.close();
  }
});

/**
 * A server at capacity that asks for an absurd wait: every control channel gets a pong (so the
 * channel is up) and a CDFE of 50,000 minutes, every session handshake ACK WAIT.
 */
async function deferringServer(): Promise<{ port: number; handshakes: () => number; close: () => void }> {
  let handshakes = 0;
  const server = tls.createServer(
    { key: fs.readFileSync(pki.serverKey), cert: fs.readFileSync(pki.serverCert), ca: fs.readFileSync(pki.caCert), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    (socket) => {
      let buf: Buffer | null = Buffer.alloc(0);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        if (buf === null) return;
        buf = Buffer.concat([buf, chunk]);
        const hello = decodeClientHello(buf);
        if (!hello) return;
        buf = null;
        if (hello.value.kind === 'CTRL') {
          socket.write(encodeControlFromServer({ type: 'pong', timestampNs: process.hrtime.bigint(), load: 0, freeMiB: 1 }));
          socket.write(encodeControlFromServer({ type: 'defer', minutes: 50_000 }));
        } else if (hello.value.kind === 'NBKP') {
          handshakes++;
          socket.end(encodeAck({ status: AckStatus.WAIT, message: 'at max_concurrent_sessions', sessionId: '' }));
        } else socket.destroy();
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as { port: number }).port, handshakes: () => handshakes, close: () => server.close() };
}

test('a CDFE longer than a timer can wait does not turn into a reconnect loop: the agent waits', { timeout: 60_000 }, async () => {
  const srv = await deferringServer();
  const yaml = join(work, 'agent-defer.yaml');
  const cfg = agentConfigObject(pki, 'agent-a', srv.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]);
  cfg.daemon = { control_channel: { enabled: true } };
  await writeYaml(yaml, cfg);
  const agent = spawn(process.execPath, [AGENT_BIN, '--config', yaml, '--once'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  agent.stdout.on('data', (c: Buffer) => (out += c.toString()));
  agent.stderr.on('data', (c: Buffer) => (out += c.toString()));
  try {
    // Wait until the agent has heard WAIT and says it waits for admission, then give it 3 s.
    const deadline = Date.now() + 20_000;
    while (!out.includes('waiting for admission') && Date.now() < deadline && agent.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    assert.ok(out.includes('waiting for admission'), out);
    const seen = srv.handshakes();
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(agent.exitCode, null, `the agent still waits\n${out}`);
    assert.equal(srv.handshakes(), seen, `no new handshake while it waits (${srv.handshakes() - seen} more)\n${out.slice(-2000)}`);
    assert.match(out, /"minutes":60,"asked":50000/, 'the wait is heard as an hour at most');
  } finally {
    agent.kill('SIGKILL');
    srv.close();
  }
});

/**
 * The real server behind a TLS proxy following `plan`; the agent backs up the test's source once
 * through it, with `retry` and the entry settings `entry`; `check` looks at the outcome.
 */
async function throughProxy(
  name: string,
  plan: TlsConnPlan[],
  o: { entry?: Record<string, unknown>; retry: Record<string, unknown> },
  check: (r: AgentResult, proxy: TlsProxy, env: Env) => void,
): Promise<void> {
  const env = await startEnv(tmp, pki, `nbk-liar-${name}-`);
  const proxy = await startTlsProxy({ target: { host: '127.0.0.1', port: env.server.port }, tls: tlsProxyMaterial(pki, 'agent-a'), plan });
  try {
    const yaml = join(work, `agent-${name}.yaml`);
    const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [join(work, 'src')] }]);
    Object.assign((cfg.backups as Record<string, unknown>[])[0], o.entry ?? {});
    cfg.retry = { max_attempts: 6, initial_delay: '100ms', connect_timeout: '5s', ...o.retry };
    await writeYaml(yaml, cfg);
    check(await runAgent(['--config', yaml, '--once'], { timeoutMs: 45_000 }), proxy, env);
  } finally {
    await proxy.close();
    await env.server.stop();
  }
}

test('a resume connection closed before the server answers is retried within the budget, and the backup commits', { timeout: 60_000 }, async () => {
  // The first connection is cut 1 MiB into the stream; the resume that follows is cut after 4
  // bytes of its RSME (the server never answers it); the next one goes through.
  const plan: TlsConnPlan[] = [{ resetAfterPlaintextBytes: 1 << 20 }, { resetAfterPlaintextBytes: 4 }, { forward: true }, { forward: true }];
  await throughProxy('resume', plan, { retry: { max_delay: '1s', read_timeout: '5s' } }, (r, proxy, env) => {
    assert.equal(r.code, 0, showRun(r));
    assert.deepEqual(proxy.conns.slice(0, 3).map((c) => `${c.kind}:${c.state}`), ['NBKP:reset', 'RSME:reset', 'RSME:closed'], JSON.stringify(proxy.conns));
    const committed = env.server.logs().filter((l) => l.msg === 'session committed');
    assert.equal(committed.length, 1, env.server.output().join('\n'));
    assert.equal(committed[0].resumes, 1);
    assert.ok(!r.logs.some((l) => l.msg === 'starting a new session from the beginning'), showRun(r));
  });
});

test('a stream whose every re-join is dropped before an acknowledgement dies after the re-join limit, instead of re-joining for ever', { timeout: 60_000 }, async () => {
  // The primary goes through; the data stream's first connection is cut 1 MiB in, and every
  // re-join after it a few bytes past its PJIN (never a whole chunk, so never a ChunkSACK).
  const drops = Array.from({ length: 12 }, () => ({ resetAfterPlaintextBytes: 2000 }));
  const plan: TlsConnPlan[] = [{ forward: true }, { resetAfterPlaintextBytes: 1 << 20 }, ...drops];
  const entry = { parallels: 1, auto_scaler: { enabled: false } };
  await throughProxy('rejoin', plan, { entry, retry: { max_delay: '400ms', read_timeout: '5s' } }, (r, proxy) => {
    assert.equal(r.code, 1, showRun(r));
    assert.match(r.stderr, /all 1 parallel stream is dead \(each failed 3 re-joins\)/, showRun(r));
    const joins = proxy.conns.filter((c) => c.kind === 'PJIN').length;
    assert.ok(joins <= 5, `${joins} stream connections: the first, and at most the re-join limit after it\n${JSON.stringify(proxy.conns.map((c) => c.kind))}`);
  });
});

test('parallel: a primary that hears nothing after its trailer re-attaches after read_timeout, and hears COMMITTED', { timeout: 60_000 }, async () => {
  const entry = { parallels: 2, auto_scaler: { enabled: false } };
  await throughProxy('final', [{ freezeAfterClientEnd: true }], { entry, retry: { max_delay: '1s', read_timeout: '2s' } }, (r, proxy, env) => {
    assert.equal(r.code, 0, showRun(r));
    assert.equal(proxy.conns[0].kind, 'NBKP');
    assert.equal(proxy.conns[0].state, 'frozen', 'the primary heard nothing after its trailer');
    assert.ok(r.logs.some((l) => l.msg === 'primary connection lost; re-attaching' && /no Final ACK from the server for 2s/.test(String(l.err))), showRun(r));
    assert.ok(r.logs.some((l) => l.msg === 'session was already committed (its Final ACK was lost)'), showRun(r));
    assert.equal(env.server.logs().filter((l) => l.msg === 'session committed').length, 1);
  });
});

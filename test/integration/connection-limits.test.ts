/**
 * Peers that try to take every connection the server has, against the real server over real
 * mTLS: idle TCP connections that never start TLS, many handshakes from one address, one agent
 * opening connection after connection, and more connections than the server holds. Each is cut
 * off or refused, the refusals are counted in /metrics without flooding the log, and every other
 * peer is still served. A real agent refused that way tries again and commits.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HealthStatus } from '../../protocol/constants.js';
import { decodeHealthPong, encodeHealthPing } from '../../protocol/frames.js';
import { sample } from '../helpers/metrics.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { pollUntil, waitUntil } from '../helpers/wait.js';
import { agentConfigObject, committedBackups, makeWorkspace, serverTail, showRun, writeServerConfig } from './harness.js';
import { HOST, rawAgent, type RawClient } from './raw-client.js';

const HANDSHAKE_S = 3;
const LIMITS = { max_connections: 12, max_handshakes_per_address: 4, max_connections_per_agent: 3 };

/** A plain TCP connection that sends `hello` (nothing by default) and never finishes a TLS handshake. */
class IdleTcp {
  readonly socket: net.Socket;
  readonly startedAt = Date.now();
  closedAt = 0;
  connected = false;

  constructor(port: number, from: string, hello?: Buffer) {
    this.socket = net.connect({ host: HOST, port, localAddress: from });
    this.socket.on('error', () => undefined);
    this.socket.on('connect', () => {
      this.connected = true;
      if (hello) this.socket.write(hello);
    });
    this.socket.on('close', () => (this.closedAt = Date.now()));
    this.socket.resume();
  }

  get closed(): boolean {
    return this.closedAt > 0;
  }
}

describe('connection limits (real server, raw TCP and mTLS clients)', { timeout: 120_000 }, () => {
  const tmp = new TempDirs();
  const opened: (IdleTcp | RawClient)[] = [];
  let pki: Pki;
  let server: ServerHandle;
  let metricsBase = '';
  let work = '';
  let src = '';

  const idle = (from: string, hello?: Buffer): IdleTcp => {
    const c = new IdleTcp(server.port, from, hello);
    opened.push(c);
    return c;
  };
  const tlsClient = (as: string, from = '127.0.0.1'): RawClient => {
    const c = rawAgent(server.port, pki, as, { localAddress: from });
    opened.push(c);
    return c;
  };
  const closeAll = (): void => {
    for (const c of opened.splice(0)) (c instanceof IdleTcp ? c.socket : c.socket).destroy();
  };
  const waitAll = (cs: IdleTcp[], what: string, ms: number): Promise<void> =>
    waitUntil(() => cs.every((c) => c.closed), ms, what, () => cs.map((c) => (c.closed ? `closed after ${c.closedAt - c.startedAt} ms` : 'open')).join(', '));
  /** A health check as `as` from `from`: READY, or null when the connection is refused. */
  const health = async (as: string, from: string): Promise<number | null> => {
    const c = rawAgent(server.port, pki, as, { localAddress: from });
    try {
      await c.connected();
      c.write(encodeHealthPing());
      return (await c.read(decodeHealthPong, 5000, 'health answer')).status;
    } catch {
      return null;
    } finally {
      c.destroy();
    }
  };
  const servedAgain = async (as: string, from: string): Promise<void> => {
    const ok = await pollUntil(async () => (await health(as, from)) === HealthStatus.READY, 10_000, 100);
    assert.ok(ok, `${as} from ${from} is not served again\n${serverTail(server, 15)}`);
  };
  const refusedCount = async (reason: string): Promise<number> =>
    sample(await (await fetch(`${metricsBase}/metrics`)).text(), 'nbackup_connections_refused_total', `reason="${reason}"`);
  const logLines = (msg: string) => server.logs().filter((l) => typeof l.msg === 'string' && l.msg.startsWith(msg));

  before(async () => {
    const ws = await makeWorkspace(tmp, 'nbackup-it-limits-', ['agent-a', 'agent-b']);
    pki = ws.pki;
    work = ws.work;
    src = join(work, 'src');
    await mkdir(src);
    await writeFile(join(src, 'hello.txt'), 'hello\n');
    const yaml = join(ws.work, 'server.yaml');
    await writeServerConfig(yaml, pki, { main: { base_dir: join(ws.work, 'storage') } }, {
      handshake_timeout: `${HANDSHAKE_S}s`,
      ...LIMITS,
      metrics: { enabled: true, listen: '127.0.0.1:0' },
    });
    server = await startServer(yaml);
    const line = await server.waitForLog((l) => l.msg === 'metrics listening (/metrics, /healthz)', 5000);
    metricsBase = `http://127.0.0.1:${line.port as number}`;
  });
  after(async () => {
    closeAll();
    await server?.stop();
    await tmp.cleanup();
  });

  it('connections that never finish their TLS handshake are closed after handshake_timeout', async () => {
    // Nothing at all, and the first bytes of a ClientHello that never comes whole.
    const silent = [idle('127.0.0.2'), idle('127.0.0.2'), idle('127.0.0.3', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))];
    await waitAll(silent, `the server to close connections that never finish TLS (handshake_timeout ${HANDSHAKE_S} s)`, (HANDSHAKE_S + 10) * 1000);
    for (const c of silent) assert.ok(c.closedAt - c.startedAt >= (HANDSHAKE_S - 1) * 1000, `closed after ${c.closedAt - c.startedAt} ms, before handshake_timeout`);
    closeAll();
  });

  it('past max_handshakes_per_address, that address is refused at once; other addresses are served; the log is not flooded', async () => {
    const holding = Array.from({ length: LIMITS.max_handshakes_per_address }, () => idle('127.0.0.4'));
    await waitUntil(() => holding.every((c) => c.connected), 5000, 'the idle connections to connect', () => '');
    const before = await refusedCount('max_handshakes_per_address').catch(() => 0);
    const refused = Array.from({ length: 20 }, () => idle('127.0.0.4'));
    await waitAll(refused, 'the server to refuse the connections over max_handshakes_per_address', HANDSHAKE_S * 1000);
    assert.ok(holding.every((c) => !c.closed), 'the refused connections were closed only because the first ones were cut off');
    assert.equal(await health('agent-b', '127.0.0.5'), HealthStatus.READY, 'another address is served meanwhile');
    assert.equal((await refusedCount('max_handshakes_per_address')) - before, refused.length, 'every refusal is counted');
    const lines = logLines('connection refused: this address has max_handshakes_per_address');
    assert.ok(lines.length >= 1 && lines.length <= 2, `${lines.length} log lines for ${refused.length} refusals`);
    assert.equal(lines[0].remote, '127.0.0.4');
    closeAll();
    await servedAgain('agent-a', '127.0.0.4');
  });

  it('past max_connections_per_agent, that agent is refused after its handshake; another agent is served', async () => {
    const holding = Array.from({ length: LIMITS.max_connections_per_agent }, (_, i) => tlsClient('agent-a', `127.0.0.${6 + i}`));
    for (const c of holding) await c.connected();
    const extra = tlsClient('agent-a', '127.0.0.9');
    await extra.waitClosed(HANDSHAKE_S * 1000);
    assert.equal(extra.received.length, 0, 'a refused connection gets no frame');
    assert.ok(holding.every((c) => !c.closed), 'the agent\'s other connections stay open');
    assert.equal(await health('agent-b', '127.0.0.9'), HealthStatus.READY, 'agent-b is served meanwhile, from the same address');
    assert.ok((await refusedCount('max_connections_per_agent')) >= 1);
    const line = logLines('connection refused: this agent holds max_connections_per_agent')[0];
    assert.equal(line?.agent, 'agent-a', serverTail(server, 15));
    holding[0].destroy();
    await servedAgain('agent-a', '127.0.0.9');
    closeAll();
  });

  it('an agent refused over max_connections_per_agent tries again, and its backup commits once a connection is free', async () => {
    const holding = Array.from({ length: LIMITS.max_connections_per_agent }, (_, i) => tlsClient('agent-a', `127.0.2.${1 + i}`));
    for (const c of holding) await c.connected();
    const refusedBefore = await refusedCount('max_connections_per_agent');
    const config = agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [src] }]);
    config.retry = { max_attempts: 5, initial_delay: '300ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '15s' };
    const yaml = join(work, 'agent-retry.yaml');
    await writeYaml(yaml, config);
    const run = runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
    const refused = await pollUntil(async () => (await refusedCount('max_connections_per_agent')) > refusedBefore, 10_000, 50);
    assert.ok(refused, `the agent's connection was not refused\n${serverTail(server, 15)}`);
    closeAll();
    const r = await run;
    assert.equal(r.code, 0, showRun(r));
    assert.ok(r.logs.some((l) => l.msg === 'no answer from the server; retrying'), showRun(r));
    assert.equal((await committedBackups(join(work, 'storage', 'agent-a', 'app'))).length, 1, 'one archive committed');
  });

  it('past max_connections, a new connection is closed as soon as it is accepted; the server serves again once they go', async () => {
    // Three addresses, each under its own handshake limit, hold every connection the server takes.
    const holding: IdleTcp[] = [];
    for (let i = 0; i < LIMITS.max_connections; i++) holding.push(idle(`127.0.1.${1 + Math.floor(i / LIMITS.max_handshakes_per_address)}`));
    await waitUntil(() => holding.every((c) => c.connected), 5000, 'the idle connections to connect', () => '');
    const dropped = [idle('127.0.1.9'), idle('127.0.1.9')];
    await waitAll(dropped, 'the server to drop connections over max_connections', HANDSHAKE_S * 1000);
    assert.ok(holding.every((c) => !c.closed), 'the server closed its held connections instead');
    assert.equal(await health('agent-b', '127.0.1.10'), null, 'nothing more is taken while the server is full');
    assert.ok((await refusedCount('max_connections')) >= 2);
    assert.ok(logLines('connection refused: the server holds max_connections').length >= 1, serverTail(server, 15));
    closeAll();
    await servedAgain('agent-b', '127.0.1.10');
  });
});

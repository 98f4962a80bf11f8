/**
 * The test bench of the security and robustness suites (security*.test.ts): a workspace with a
 * PKI for agent-a and agent-b, the main server every negative case runs against, a small source
 * with its agent.yaml, and the hostile raw clients. After every negative case `stillServes()`
 * checks that the same server still serves.
 *
 * The helpers are arrow-function properties, so a suite may destructure them.
 *
 * Not a test file itself (it has no tests); `node --test` may still load it, harmlessly.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HealthStatus } from '../../protocol/constants.js';
import type { Ack, HealthPong } from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { pollUntil } from '../helpers/wait.js';
import { committedBackups, makeWorkspace, serverTail, showRun, writeAgentConfig, writeServerConfig } from './harness.js';
import {
  rawAgent,
  rawHandshake,
  rawHealth,
  readUntilFinal,
  type HandshakeSpec,
  type RawClient,
  type RawOptions,
} from './raw-client.js';

export const AGENT_TIMEOUT_MS = 30_000;

export class SecurityBench {
  readonly tmp = new TempDirs();
  work = '';
  pki!: Pki;
  /** The main server: storage "main" (base, max_backups 10). */
  server: ServerHandle | undefined;
  /** base_dir of the main server's storage "main". */
  base = '';
  /** A small source tree, and an agent.yaml backing it up to the main server as agent-a/app. */
  src = '';
  agentYaml = '';
  private readonly opened: RawClient[] = [];

  /** Makes the workspace (`prefix`…) with its PKI, starts the main server, writes the source and agent.yaml. */
  async start(prefix: string): Promise<void> {
    ({ work: this.work, pki: this.pki } = await makeWorkspace(this.tmp, prefix, ['agent-a', 'agent-b']));
    this.base = join(this.work, 'storage');
    const serverYaml = join(this.work, 'server.yaml');
    await writeServerConfig(serverYaml, this.pki, { main: { base_dir: this.base, max_backups: 10 } });
    this.server = await startServer(serverYaml);
    this.src = join(this.work, 'src');
    await mkdir(join(this.src, 'dir'), { recursive: true });
    await writeFile(join(this.src, 'dir', 'hello.txt'), 'hello\n');
    await writeFile(join(this.src, 'data.bin'), randomBytesSeeded(200_000, 5));
    this.agentYaml = join(this.work, 'agent.yaml');
    await writeAgentConfig(this.agentYaml, this.pki, 'agent-a', this.server.port, [{ name: 'app', storage: 'main', sources: [this.src] }]);
  }

  /** Destroys every raw client, stops the main server, then `others`, and removes the workspace. */
  async stop(others: (ServerHandle | undefined)[] = []): Promise<void> {
    for (const c of this.opened) c.destroy();
    await this.server?.stop();
    for (const s of others) await s?.stop();
    await this.tmp.cleanup();
  }

  /** A raw connection as `as` (default agent-a; null: no certificate), closed by stop(). */
  client = (o: Partial<RawOptions> & { as?: string | null } = {}, port = this.server!.port): RawClient => {
    const c = rawAgent(port, this.pki, o.as === undefined ? 'agent-a' : o.as, o);
    this.opened.push(c);
    return c;
  };

  /** Opens an mTLS connection as `as` and sends a handshake; returns the ACK and the client. */
  handshake = async (hs: Partial<HandshakeSpec>, as = 'agent-a', port = this.server!.port): Promise<{ ack: Ack; c: RawClient }> => {
    const c = this.client({ as }, port);
    const ack = await rawHandshake(c, { ...hs, agent: hs.agent ?? as });
    return { ack, c };
  };

  /** A refused handshake: the status, no session id, and the server ends the connection. */
  expectRefused = async (hs: Partial<HandshakeSpec>, status: number, as = 'agent-a', port = this.server!.port): Promise<Ack> => {
    const { ack, c } = await this.handshake(hs, as, port);
    assert.equal(ack.status, status, `handshake ${JSON.stringify(hs)} as ${as}: expected status ${status}, got ${ack.status} (${ack.message})`);
    assert.equal(ack.sessionId, '', 'a refusal carries no session id');
    await c.waitClosed(5000);
    return ack;
  };

  /** Reads SACKs up to the Final ACK; a connection closed without one (error or not) gives final null. */
  readToFinal = (c: RawClient): Promise<{ sacks: number[]; final: number | null }> =>
    readUntilFinal(c, { timeoutMs: 10_000, errorMeansNoFinal: true });

  /** Sends body + trailer on a session that got GO, half-closes, returns SACKs and the final status. */
  finishSession = (c: RawClient, body: Buffer, trailer: Buffer): Promise<{ sacks: number[]; final: number | null }> => {
    c.write(body);
    c.write(trailer);
    c.socket.end();
    return this.readToFinal(c);
  };

  /** The server still serves: alive, answers a health check READY, and logs nothing fatal. */
  stillServes = async (): Promise<void> => {
    const server = this.server!;
    assert.equal(server.proc.exitCode, null, `server exited\n${server.output().slice(-30).join('\n')}`);
    assert.equal(server.proc.signalCode, null, 'server was killed');
    // READY once the previous case's connections are gone (BUSY while a session is still active):
    // the health answer is the state awaited, asked every 100 ms.
    let pong: HealthPong | undefined;
    await pollUntil(
      async () => {
        pong = await rawHealth(server.port, this.pki);
        return pong.status !== HealthStatus.BUSY;
      },
      5000,
      100,
    );
    const last = pong as HealthPong; // pollUntil ran the check at least once
    assert.equal(last.status, HealthStatus.READY, `health status ${last.status} (1 = BUSY: a session is still open)\n${serverTail(server, 15)}`);
    assert.ok(last.freeBytes > 0);
    assert.ok(!server.logs().some((l) => typeof l.level === 'number' && l.level >= 60), 'server logged a fatal error');
  };

  /** The real agent backs up agent-a/app to the main server: one more committed backup. */
  goodAgentBackup = async (): Promise<void> => {
    const dir = join(this.base, 'agent-a', 'app');
    const before = await committedBackups(dir);
    const r = await runAgent(['--config', this.agentYaml, '--once'], { timeoutMs: AGENT_TIMEOUT_MS });
    assert.equal(r.code, 0, `a good backup must still work\n${showRun(r)}`);
    const afterList = await committedBackups(dir);
    assert.equal(afterList.length, before.length + 1, 'one more committed backup');
  };
}

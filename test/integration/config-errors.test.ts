/**
 * Bad configuration and bad TLS material: both CLIs exit non-zero before doing anything, with a
 * message that names the file and (for config problems) the key path.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import type { Pki } from '../helpers/pki.js';
import { SERVER_BIN, runAgent, startServer, type AgentResult, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, listFilesRecursive, makeWorkspace, serverConfigObject, showRun, writeServerConfig } from './harness.js';

const CLI_TIMEOUT_MS = 15_000;

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('configuration and TLS material errors', { timeout: 110_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let storage: string;
  let src: string;
  let n = 0;

  before(async () => {
    ({ work, pki } = await makeWorkspace(tmp, 'nbackup-it-cfg-', ['agent-a', 'agent-b']));
    storage = join(work, 'storage');
    const serverYaml = join(work, 'server-good.yaml');
    await writeServerConfig(serverYaml, pki, { main: { base_dir: storage } });
    // A real server, so that an agent that wrongly goes ahead would leave a trace.
    server = await startServer(serverYaml);
    src = join(work, 'src');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'f.txt'), 'f\n');
  });

  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  function goodAgent(): Obj {
    return agentConfigObject(pki, 'agent-a', server!.port, [{ name: 'app', storage: 'main', sources: [src] }]) as Obj;
  }

  function goodServer(): Obj {
    return serverConfigObject(pki, { main: { base_dir: join(work, `srv-storage-${n}`), max_backups: 2 } }) as Obj;
  }

  async function writeConfig(kind: string, value: Obj | string): Promise<string> {
    const file = join(work, `${kind}-${++n}.yaml`);
    await writeFile(file, typeof value === 'string' ? value : stringify(value));
    return file;
  }

  /** Asserts a prompt non-zero exit whose stderr contains every one of `needles`. */
  function assertRefused(r: AgentResult, needles: (string | RegExp)[]): void {
    assert.equal(r.timedOut, false, `the CLI must exit promptly\n${showRun(r)}`);
    assert.ok(r.code !== null && r.code !== 0, `expected a non-zero exit\n${showRun(r)}`);
    for (const needle of needles) {
      if (typeof needle === 'string') assert.ok(r.stderr.includes(needle), `stderr should contain ${JSON.stringify(needle)}\n${showRun(r)}`);
      else assert.match(r.stderr, needle, showRun(r));
    }
  }

  async function agentOnce(file: string): Promise<AgentResult> {
    return runAgent(['--config', file, '--once'], { timeoutMs: CLI_TIMEOUT_MS });
  }
  async function agentHealth(file: string): Promise<AgentResult> {
    return runAgent(['health', `127.0.0.1:${server!.port}`, '--config', file], { timeoutMs: CLI_TIMEOUT_MS });
  }
  async function serverRun(file: string): Promise<AgentResult> {
    const r = await runAgent(['--config', file], { timeoutMs: CLI_TIMEOUT_MS, script: SERVER_BIN });
    assert.ok(!/"msg":"listening"/.test(r.stdout), `the server must not start listening\n${showRun(r)}`);
    return r;
  }

  /** Nothing reached the server: no session, nothing stored. */
  async function nothingHappened(logsBefore: number): Promise<void> {
    const newLogs = server!.logs().slice(logsBefore);
    assert.ok(!newLogs.some((l) => l.msg === 'session started'), `the agent must not have started a session: ${JSON.stringify(newLogs)}`);
    assert.deepEqual(await listFilesRecursive(storage), [], 'nothing may be stored');
  }

  // ─── agent.yaml ───────────────────────────────────────────────────────────────────────────

  it('control: the unmodified agent config works (so the failures below are caused by the change)', async () => {
    const file = await writeConfig('agent-good', goodAgent());
    const r = await runAgent(['health', `127.0.0.1:${server!.port}`, '--config', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stdout, /^READY/m, showRun(r));
  });

  const agentCases: { name: string; mutate: (c: Obj) => void; keyPath: string; also?: RegExp }[] = [
    { name: 'unknown key agent.colour', mutate: (c) => (c.agent.colour = 'blue'), keyPath: 'agent.colour', also: /unknown/i },
    { name: 'unknown top-level key', mutate: (c) => (c.bogus_section = { a: 1 }), keyPath: 'bogus_section', also: /unknown/i },
    { name: 'unknown key in a backup entry', mutate: (c) => (c.backups[0].sauces = []), keyPath: 'backups[0].sauces' },
    {
      name: 'chunk_size below the range',
      mutate: (c) => (c.backups[0].resume = { chunk_size: '32kb' }),
      keyPath: 'backups[0].resume.chunk_size',
      also: /64kb|64 ?KiB|65536/i,
    },
    {
      name: 'chunk_size that is not a size',
      mutate: (c) => (c.backups[0].resume = { chunk_size: 'lots' }),
      keyPath: 'backups[0].resume.chunk_size',
      also: /lots/,
    },
    { name: 'missing server.address', mutate: (c) => delete c.server.address, keyPath: 'server.address', also: /missing|required/i },
    { name: 'missing agent section', mutate: (c) => delete c.agent, keyPath: 'agent', also: /missing|required/i },
    { name: 'missing sources', mutate: (c) => delete c.backups[0].sources, keyPath: 'backups[0].sources', also: /missing|required/i },
  ];

  for (const tc of agentCases) {
    it(`agent: ${tc.name} → exits non-zero naming the file and ${tc.keyPath}`, async () => {
      const c = goodAgent();
      tc.mutate(c);
      const file = await writeConfig('agent', c);
      const logsBefore = server!.logs().length;
      const r = await agentOnce(file);
      assertRefused(r, [file, tc.keyPath, ...(tc.also ? [tc.also] : [])]);
      await nothingHappened(logsBefore);
    });
  }

  it('agent: health refuses a bad config too', async () => {
    const c = goodAgent();
    c.agent.colour = 'blue';
    const file = await writeConfig('agent', c);
    assertRefused(await agentHealth(file), [file, 'agent.colour']);
  });

  it('agent: invalid YAML names the file', async () => {
    const file = await writeConfig('agent', 'agent: { name: agent-a\nbackups: [\n');
    assertRefused(await agentOnce(file), [file]);
  });

  it('agent: a private key that does not match the certificate → exit non-zero naming the key file', async () => {
    const c = goodAgent();
    c.tls.client_key = pki.agents['agent-b'].key;
    const file = await writeConfig('agent', c);
    const logsBefore = server!.logs().length;
    assertRefused(await agentOnce(file), [pki.agents['agent-b'].key]);
    assertRefused(await agentHealth(file), [pki.agents['agent-b'].key]);
    await nothingHappened(logsBefore);
  });

  it('agent: an unreadable certificate / key / CA path → exit non-zero naming the file', async () => {
    const missing = join(work, 'no-such-dir', 'agent.crt');
    const aDir = join(work, 'pki'); // a directory, not a file
    const variants: [string, string][] = [
      ['client_cert', missing],
      ['client_cert', aDir],
      ['client_key', join(work, 'missing.key')],
      ['ca_cert', join(work, 'missing-ca.crt')],
    ];
    const logsBefore = server!.logs().length;
    for (const [key, path] of variants) {
      const c = goodAgent();
      c.tls[key] = path;
      const file = await writeConfig('agent', c);
      assertRefused(await agentOnce(file), [path]);
    }
    const c = goodAgent();
    c.tls.client_cert = missing;
    assertRefused(await agentHealth(await writeConfig('agent', c)), [missing]);
    await nothingHappened(logsBefore);
  });

  it('agent: a certificate file that is not PEM → exit non-zero naming the file', async () => {
    const junk = join(work, 'junk.crt');
    await writeFile(junk, 'this is not a certificate\n');
    const c = goodAgent();
    c.tls.client_cert = junk;
    assertRefused(await agentOnce(await writeConfig('agent', c)), [junk]);
  });

  // ─── server.yaml ──────────────────────────────────────────────────────────────────────────

  it('control: the unmodified server config starts', async () => {
    const file = await writeConfig('server-good', goodServer());
    const s = await startServer(file);
    await s.stop();
  });

  const serverCases: { name: string; mutate: (c: Obj) => void; keyPath: string; also?: RegExp }[] = [
    { name: 'unknown key server.bogus', mutate: (c) => (c.server.bogus = 1), keyPath: 'server.bogus', also: /unknown/i },
    { name: 'unknown key in a storage', mutate: (c) => (c.storages.main.max_backup = 3), keyPath: 'storages.main.max_backup' },
    { name: 'bad size min_free', mutate: (c) => (c.storages.main.min_free = '12xb'), keyPath: 'storages.main.min_free', also: /12xb/ },
    { name: 'bad duration', mutate: (c) => (c.server.handshake_timeout = '10'), keyPath: 'server.handshake_timeout' },
    { name: 'missing server.listen', mutate: (c) => delete c.server.listen, keyPath: 'server.listen', also: /missing|required/i },
    { name: 'missing base_dir', mutate: (c) => delete c.storages.main.base_dir, keyPath: 'storages.main.base_dir', also: /missing|required/i },
    { name: 'max_backups 0', mutate: (c) => (c.storages.main.max_backups = 0), keyPath: 'storages.main.max_backups' },
  ];

  for (const tc of serverCases) {
    it(`server: ${tc.name} → exits non-zero naming the file and ${tc.keyPath}`, async () => {
      const c = goodServer();
      tc.mutate(c);
      const file = await writeConfig('server', c);
      assertRefused(await serverRun(file), [file, tc.keyPath, ...(tc.also ? [tc.also] : [])]);
    });
  }

  it('server: a private key that does not match the certificate → exit non-zero naming the key file', async () => {
    const c = goodServer();
    c.tls.server_key = pki.agents['agent-a'].key;
    assertRefused(await serverRun(await writeConfig('server', c)), [pki.agents['agent-a'].key]);
  });

  it('server: an unreadable certificate / key / CA path → exit non-zero naming the file', async () => {
    for (const [key, path] of [
      ['server_cert', join(work, 'nope', 'server.crt')],
      ['server_cert', join(work, 'pki')],
      ['server_key', join(work, 'nope.key')],
      ['ca_cert', join(work, 'nope-ca.crt')],
    ] as const) {
      const c = goodServer();
      c.tls[key] = path;
      assertRefused(await serverRun(await writeConfig('server', c)), [path]);
    }
  });
});

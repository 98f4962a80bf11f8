/**
 * One error path: whatever ends a command, both CLIs print one line (no stack trace) and exit with
 * the status the one table (src/exit-codes.ts) gives its kind; `--help` prints that table, and the
 * README's copy of it matches.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXIT_CODES } from '../../src/exit-codes.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { REPO_ROOT, SERVER_BIN, runAgent, writeYaml, type AgentResult } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject } from './harness.js';

function show(r: AgentResult): string {
  return `exit ${r.code}\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout.slice(-2000)}`;
}

/** The error is one line naming the command, and no stack trace leaked. */
function assertOneLine(r: AgentResult, command: string, pattern: RegExp): void {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, show(r));
  assert.ok(lines[0].startsWith(`${command}: `), show(r));
  assert.match(lines[0], pattern, show(r));
  assert.doesNotMatch(r.stderr + r.stdout, /\n\s+at .*\(.*:\d+:\d+\)/, 'no stack trace');
}

const runServer = (args: string[]) => runAgent(args, { script: SERVER_BIN, timeoutMs: 20_000 });

describe('CLI errors and exit status', () => {
  const dirs = new TempDirs();
  let dir: string;
  let pki: Pki;

  before(async () => {
    dir = await dirs.make('nbk-cli-');
    pki = await makePki(join(dir, 'pki'), { agents: ['agent-a'] });
  });
  after(() => dirs.cleanup());

  it('--help of both commands ends with the exit-status table', async () => {
    for (const r of [await runAgent(['--help']), await runServer(['--help'])]) {
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /Exit status:/);
      for (const e of EXIT_CODES) assert.ok(r.stdout.includes(`${String(e.code).padStart(2)}  ${e.meaning}`), `${e.code} missing:\n${r.stdout}`);
    }
  });

  it("the README's exit-status table is the one the code uses", () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| (\d+) \| (.+?) \|$/gm)].map((m) => [Number(m[1]), m[2]]);
    assert.deepEqual(
      rows,
      EXIT_CODES.map((e) => [e.code, e.meaning]),
    );
  });

  it('usage mistakes exit 2 with one line', async () => {
    assertOneLine(await runAgent(['--once']), 'nbackup-agent', /required option '-c, --config <file>'/);
    const bogus = await runAgent(['--bogus']);
    assert.equal(bogus.code, 2, show(bogus));
    const yaml = join(dir, 'agent.yaml');
    await writeYaml(yaml, agentConfigObject(pki, 'agent-a', 1, [{ name: 'a', storage: 's', sources: [dir] }]));
    const r = await runAgent(['--config', yaml, '--backup', 'a']);
    assert.equal(r.code, 2, show(r));
    assertOneLine(r, 'nbackup-agent', /--backup and --progress are only valid with --once/);
    const none = await runAgent(['--config', yaml, '--once', '--backup', 'nope']);
    assert.equal(none.code, 2, show(none));
    assertOneLine(none, 'nbackup-agent', /no backup entry named "nope"/);
  });

  it('a logging.file in a folder that does not exist is a one-line config error for both commands', async () => {
    const missing = join(dir, 'no-such-folder', 'x.log');
    const agentYaml = join(dir, 'agent-badlog.yaml');
    const cfg = agentConfigObject(pki, 'agent-a', 1, [{ name: 'a', storage: 's', sources: [dir] }]);
    await writeYaml(agentYaml, { ...cfg, logging: { level: 'info', format: 'json', file: missing } });
    const a = await runAgent(['--config', agentYaml, '--once']);
    assert.equal(a.code, 2, show(a));
    assertOneLine(a, 'nbackup-agent', new RegExp(`agent-badlog\\.yaml: logging\\.file: cannot open ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*ENOENT`));

    const serverYaml = join(dir, 'server-badlog.yaml');
    await writeYaml(serverYaml, {
      server: { listen: '127.0.0.1:0' },
      tls: { ca_cert: pki.caCert, server_cert: pki.serverCert, server_key: pki.serverKey },
      storages: { main: { base_dir: join(dir, 'store') } },
      logging: { level: 'info', format: 'json', file: missing },
    });
    const s = await runServer(['--config', serverYaml]);
    assert.equal(s.code, 2, show(s));
    assertOneLine(s, 'nbackup-server', /server-badlog\.yaml: logging\.file: cannot open .*ENOENT/);
  });

  it('unusable TLS material exits 3, an unreachable server exits 4', async () => {
    const yaml = join(dir, 'agent-badtls.yaml');
    const cfg = agentConfigObject(pki, 'agent-a', 1, [{ name: 'a', storage: 's', sources: [dir] }]);
    await writeYaml(yaml, { ...cfg, tls: { ...(cfg.tls as object), client_key: join(dir, 'missing.key') } });
    const tlsRun = await runAgent(['--config', yaml, '--once']);
    assert.equal(tlsRun.code, 3, show(tlsRun));
    assertOneLine(tlsRun, 'nbackup-agent', /cannot read private key .*missing\.key/);

    // A port that nothing listens on: bind, note it, close.
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const ok = join(dir, 'agent-ok.yaml');
    await writeYaml(ok, agentConfigObject(pki, 'agent-a', port, [{ name: 'a', storage: 's', sources: [dir] }]));
    const health = await runAgent(['health', `127.0.0.1:${port}`, '--config', ok]);
    assert.equal(health.code, 4, show(health));
    assertOneLine(health, 'nbackup-agent', /cannot connect to 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
  });
});

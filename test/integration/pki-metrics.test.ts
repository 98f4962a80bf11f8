/**
 * The built-in PKI (`nbackup-server pki …`) end to end: files, modes, refusals, `openssl verify`,
 * then a server and agent running on those certificates, with the server's Prometheus listener
 * scraped before and after a second backup.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { sample } from '../helpers/metrics.js';
import type { Pki } from '../helpers/pki.js';
import { SERVER_BIN, runAgent, startServer, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, type TreeInfo } from '../helpers/tree.js';
import { agentConfigObject, committedBackups, restoreAndCompare, showRun, writeServerConfig } from './harness.js';
import { writeYaml } from '../helpers/proc.js';

const run = promisify(execFile);

async function serverCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [SERVER_BIN, ...args], { timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

function mode(file: string): number {
  return statSync(file).mode & 0o777;
}

describe('built-in PKI, then metrics over two backups', { timeout: 120_000 }, () => {
  const tmp = new TempDirs();
  let server: ServerHandle | undefined;
  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  it('issues a CA, a server and agent certificates that openssl verifies, with tight modes, and never overwrites', async () => {
    const dir = join(await tmp.make('nbackup-it-pki-'), 'pki');
    const init = await serverCli(['pki', 'init-ca', '--dir', dir]);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /wrote .*ca\.key/);
    assert.equal((await serverCli(['pki', 'issue-server', '--dir', dir, '--san', '127.0.0.1,localhost'])).code, 0);
    assert.equal((await serverCli(['pki', 'issue-agent', 'agent-a', '--dir', dir])).code, 0);
    for (const key of ['ca.key', 'server.key', 'agent-a.key']) assert.equal(mode(join(dir, key)), 0o600, key);
    for (const cert of ['ca.crt', 'server.crt', 'agent-a.crt']) assert.equal(mode(join(dir, cert)), 0o644, cert);

    const verify = await run('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'server.crt'), join(dir, 'agent-a.crt')]);
    assert.match(verify.stdout, /server\.crt: OK/);
    assert.match(verify.stdout, /agent-a\.crt: OK/);
    const text = async (f: string) => (await run('openssl', ['x509', '-noout', '-text', '-in', join(dir, f)])).stdout;
    const ca = await text('ca.crt');
    assert.match(ca, /CA:TRUE/);
    assert.match(ca, /Certificate Sign/);
    assert.match(ca, /ASN1 OID: prime256v1/);
    const srv = await text('server.crt');
    assert.match(srv, /TLS Web Server Authentication/);
    assert.match(srv, /IP Address:127\.0\.0\.1/);
    assert.match(srv, /DNS:localhost/);
    const agent = await text('agent-a.crt');
    assert.match(agent, /TLS Web Client Authentication/);
    assert.match(agent, /Subject: CN\s*=\s*agent-a/);

    const caKey = readFileSync(join(dir, 'ca.key'), 'utf8');
    const again = await serverCli(['pki', 'init-ca', '--dir', dir]);
    assert.equal(again.code, 2, 'a second init-ca is a usage error');
    assert.match(again.stderr, /already exists; nothing was written/);
    assert.equal(readFileSync(join(dir, 'ca.key'), 'utf8'), caKey, 'the CA key is untouched');
    const dupAgent = await serverCli(['pki', 'issue-agent', 'agent-a', '--dir', dir]);
    assert.equal(dupAgent.code, 2);
    const bad = await serverCli(['pki', 'issue-agent', '..', '--dir', dir]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid agent name/);
    const noCa = await serverCli(['pki', 'issue-agent', 'x', '--dir', join(dir, 'nowhere')]);
    assert.notEqual(noCa.code, 0);
    assert.match(noCa.stderr, /init-ca/);
  });

  it('a backup runs on the issued certificates; /metrics counts it and /healthz names a storage below its reserve', async () => {
    const work = await tmp.make('nbackup-it-metrics-');
    const dir = join(work, 'pki');
    for (const args of [['init-ca'], ['issue-server', '--san', '127.0.0.1'], ['issue-agent', 'agent-a'], ['issue-agent', 'short-lived', '--days', '10']]) {
      const r = await serverCli(['pki', ...args, '--dir', dir]);
      assert.equal(r.code, 0, r.stderr);
    }
    const pair = (n: string) => ({ cert: join(dir, `${n}.crt`), key: join(dir, `${n}.key`) });
    const pki: Pki = {
      dir,
      caCert: join(dir, 'ca.crt'),
      caKey: join(dir, 'ca.key'),
      serverCert: join(dir, 'server.crt'),
      serverKey: join(dir, 'server.key'),
      agents: { 'agent-a': pair('agent-a'), 'short-lived': pair('short-lived') },
      rogue: { caCert: '', caKey: '', cert: '', key: '' },
    };
    const store = join(work, 'store');
    const serverYaml = join(work, 'server.yaml');
    await writeServerConfig(
      serverYaml,
      pki,
      { main: { base_dir: store, max_backups: 3 }, reserve: { base_dir: join(work, 'reserve'), min_free: '1000tb' } },
      { metrics: { enabled: true, listen: '127.0.0.1:0' } },
    );
    server = await startServer(serverYaml);
    const certs = await server.waitForLog((l) => l.msg === 'certificates valid', 5000);
    assert.ok(certs.serverCertDays === 824 || certs.serverCertDays === 825, JSON.stringify(certs));
    const metricsLine = await server.waitForLog((l) => l.msg === 'metrics listening (/metrics, /healthz)', 5000);
    const base = `http://127.0.0.1:${metricsLine.port as number}`;
    const scrape = async () => (await fetch(`${base}/metrics`)).text();

    const tree: TreeInfo = await makeTree(join(work, 'src'));
    const agentYaml = join(work, 'agent.yaml');
    await writeYaml(agentYaml, agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes }]));
    const first = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: 45_000 });
    assert.equal(first.code, 0, showRun(first));
    assert.ok(!first.logs.some((l) => /expires in/.test(String(l.msg))), 'no expiry warning for a fresh 825-day certificate');
    const before = await scrape();
    const committedBefore = sample(before, 'nbackup_sessions_total', 'result="committed"');
    const bytesBefore = sample(before, 'nbackup_committed_bytes_total', 'storage="main"');
    const receivedBefore = sample(before, 'nbackup_received_bytes_total');

    const startedAt = Math.floor(Date.now() / 1000);
    const second = await runAgent(['--config', agentYaml, '--once'], { timeoutMs: 45_000 });
    assert.equal(second.code, 0, showRun(second));
    const archives = await committedBackups(join(store, 'agent-a', 'app'));
    assert.equal(archives.length, 2);
    const newest = join(store, 'agent-a', 'app', archives[archives.length - 1]);
    const size = statSync(newest).size;
    await restoreAndCompare(newest, tree, join(work, 'restore'));

    const afterText = await scrape();
    const labels = 'agent="agent-a",storage="main",backup="app"';
    assert.equal(sample(afterText, 'nbackup_sessions_total', 'result="committed"'), committedBefore + 1);
    assert.equal(sample(afterText, 'nbackup_committed_bytes_total', 'storage="main"'), bytesBefore + size);
    assert.ok(sample(afterText, 'nbackup_received_bytes_total') - receivedBefore >= size, 'received grew by at least the archive');
    assert.equal(sample(afterText, 'nbackup_last_backup_size_bytes', labels), size);
    const at = sample(afterText, 'nbackup_last_backup_timestamp_seconds', labels);
    assert.ok(at >= startedAt && at <= Math.ceil(Date.now() / 1000), `last backup time ${at}`);
    assert.ok(sample(afterText, 'nbackup_last_backup_duration_seconds', labels) > 0);
    assert.equal(sample(afterText, 'nbackup_backup_duration_seconds_count', 'storage="main"'), 2);
    assert.equal(sample(afterText, 'nbackup_active_sessions'), 0);
    assert.ok(sample(afterText, 'nbackup_storage_free_bytes', 'storage="main"') > 0);
    assert.ok([824, 825].includes(sample(afterText, 'nbackup_certificate_expiry_days', 'certificate="server"')));

    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 503);
    const body = (await health.json()) as { status: string; storages: Record<string, { ok: boolean; problem?: string }> };
    assert.equal(body.status, 'degraded');
    assert.equal(body.storages.main.ok, true);
    assert.equal(body.storages.reserve.ok, false);
    assert.match(body.storages.reserve.problem ?? '', /min_free/);
    assert.equal((await fetch(`${base}/other`)).status, 404);
    // `health` names the storage below its reserve first, then every storage.
    const cliHealth = await runAgent(['health', '--config', agentYaml], { timeoutMs: 20_000 });
    assert.equal(cliHealth.code, 1, showRun(cliHealth));
    assert.match(cliHealth.stdout, /^LOW DISK free=\S+ \(\d+ bytes\) on storage "reserve" \(reserve 1000tb\)$/m, showRun(cliHealth));
    assert.match(cliHealth.stdout, /^  main: OK, free \S+, reserve \S+$/m, showRun(cliHealth));
    assert.match(cliHealth.stdout, /^  reserve: LOW, free \S+, reserve 1000tb$/m, showRun(cliHealth));
    assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);

    // An agent whose certificate runs out within 30 days says so at start, and still backs up.
    const shortYaml = join(work, 'short.yaml');
    await writeYaml(shortYaml, agentConfigObject(pki, 'short-lived', server.port, [{ name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes }]));
    const short = await runAgent(['--config', shortYaml, '--once'], { timeoutMs: 45_000 });
    assert.equal(short.code, 0, showRun(short));
    assert.ok(short.logs.some((l) => /the agent certificate expires in (9|10) days/.test(String(l.msg))), showRun(short));
  });
});

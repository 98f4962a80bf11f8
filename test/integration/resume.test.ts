/**
 * Resume: a backup whose connection breaks continues from the server's last offset instead of
 * starting over. Faults come from a TCP proxy between agent and server on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { assertTreesEqual } from '../helpers/compare.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { gnuTarExtract, gzipTest } from '../helpers/tar.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, randomBytesSeeded } from '../helpers/tree.js';
import { agentConfigObject, committedBackups, listFilesRecursive, writeServerConfig } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let src: string;
let tree: Awaited<ReturnType<typeof makeTree>>;

before(async () => {
  const dir = await tmp.make('nbk-resume-');
  pki = await makePki(path.join(dir, 'pki'), { agents: ['agent-a'] });
  src = path.join(dir, 'src');
  tree = await makeTree(src);
  // ~24 MiB that does not compress, so the stream is long enough to cut three times.
  fs.mkdirSync(path.join(src, 'bulk'));
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(src, 'bulk', `r${i}.bin`), randomBytesSeeded(8 * 1024 * 1024, 100 + i));
});
after(() => tmp.cleanup());

async function setup(name: string, serverExtra: Record<string, unknown> = {}): Promise<{ dir: string; store: string; server: ServerHandle }> {
  const dir = await tmp.make(`nbk-resume-${name}-`);
  const store = path.join(dir, 'store');
  await writeServerConfig(path.join(dir, 'server.yaml'), pki, { main: { base_dir: store, max_backups: 3 } }, serverExtra);
  const server = await startServer(path.join(dir, 'server.yaml'));
  return { dir, store, server };
}

async function agentYaml(dir: string, port: number, extra: Record<string, unknown>): Promise<string> {
  const cfg = agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [src], exclude: tree.excludes }]);
  Object.assign(cfg, extra);
  const file = path.join(dir, 'agent.yaml');
  await writeYaml(file, cfg);
  return file;
}

async function restoreAndCompare(store: string, dir: string): Promise<string> {
  const backupDir = path.join(store, 'agent-a', 'app');
  const files = (await committedBackups(backupDir)).map((f) => path.join(backupDir, path.basename(f)));
  assert.equal(files.length, 1, `exactly one committed backup, got ${files.join(', ')}`);
  await gzipTest(files[0]);
  const out = path.join(dir, 'restore');
  await gnuTarExtract(files[0], out);
  await assertTreesEqual(src, path.join(out, src.slice(1)), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });
  const leftovers = (await listFilesRecursive(store)).filter((f) => f.endsWith('.tmp'));
  assert.deepEqual(leftovers, []);
  return files[0];
}

function committedLog(stdout: string): Record<string, number> {
  const line = stdout.split('\n').find((l) => l.includes('"backup committed"'));
  assert.ok(line, `agent logged no commit:\n${stdout}`);
  return JSON.parse(line) as Record<string, number>;
}

test('three resets at different offsets: resumed each time, nothing restarted from zero, restore exact', async () => {
  const { dir, store, server } = await setup('cuts');
  const proxy = await startProxy({
    target: { host: '127.0.0.1', port: server.port },
    plan: [{ resetAfterBytes: 3_000_000 }, { resetAfterBytes: 7_000_000 }, { resetAfterBytes: 5_000_000 }],
  });
  try {
    const cfg = await agentYaml(dir, proxy.port, {
      retry: { max_attempts: 6, initial_delay: '100ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '5s' },
      resume: { buffer_size: '64mb', chunk_size: '1mb' },
    });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 120_000 });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    const file = await restoreAndCompare(store, dir);
    const archive = fs.statSync(file).size;
    const log = committedLog(run.stdout);
    assert.equal(log.bytes, archive);
    assert.equal(log.reconnects, 3, 'one reconnect per cut');
    // The in-flight window per cut: what the agent had sent beyond the server's last written
    // offset. Bounded by socket buffers plus the 1 MiB SACK interval; 8 MiB is generous.
    const window = 8 * 1024 * 1024;
    assert.ok(log.bytesResent <= 3 * window, `resent ${log.bytesResent} bytes`);
    assert.equal(log.bytesSent, archive + 44 + log.bytesResent, 'every body byte sent once, plus the resends');
    // On the wire (TLS framing included), nowhere near a restart from zero.
    assert.ok(proxy.bytesClientToServer < archive * 1.05 + 3 * window, `proxy saw ${proxy.bytesClientToServer} for ${archive}`);
    const resumed = server.logs().filter((l) => l.msg === 'session resumed');
    assert.equal(resumed.length, 3);
    const offsets = resumed.map((l) => Number(l.lastOffset));
    assert.ok(offsets.every((o, i) => o > 0 && (i === 0 || o > offsets[i - 1])), `offsets ${offsets}`);
  } finally {
    await proxy.close();
    await server.stop();
  }
});

test('a stalled link (no reset, nothing forwarded) is detected by the read timeout and resumed', async () => {
  const { dir, store, server } = await setup('stall');
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: server.port }, plan: [{ stallAfterBytes: 4_000_000 }] });
  try {
    const cfg = await agentYaml(dir, proxy.port, {
      retry: { max_attempts: 4, initial_delay: '100ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '2s' },
    });
    const started = Date.now();
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.ok(Date.now() - started < 30_000);
    await restoreAndCompare(store, dir);
    assert.equal(committedLog(run.stdout).reconnects, 1);
    assert.ok(run.stdout.includes('no acknowledgement from the server'), 'the read timeout is what detected it');
  } finally {
    await proxy.close();
    await server.stop();
  }
});

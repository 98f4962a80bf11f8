/**
 * Resume: a backup whose connection breaks continues from the server's last offset instead of
 * starting over. Faults come from a TCP proxy between agent and server on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import type { TreeInfo } from '../helpers/tree.js';
import { makeSource, makeWorkspace, restoreTheBackup, startEnv, writeAppAgentYaml } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let tree: TreeInfo;

before(async () => {
  const ws = await makeWorkspace(tmp, 'nbk-resume-', ['agent-a']);
  pki = ws.pki;
  // ~24 MiB that does not compress, so the stream is long enough to cut three times.
  tree = await makeSource(path.join(ws.work, 'src'), { files: 3, size: 8 * 1024 * 1024, seed: 100 });
});
after(() => tmp.cleanup());

const setup = (name: string) => startEnv(tmp, pki, `nbk-resume-${name}-`);

function committedLog(stdout: string): Record<string, number> {
  const line = stdout.split('\n').find((l) => l.includes('"backup committed"'));
  assert.ok(line, `agent logged no commit:\n${stdout}`);
  return JSON.parse(line) as Record<string, number>;
}

test('three resets at different offsets: resumed each time, nothing restarted from zero, restore exact', async () => {
  const env = await setup('cuts');
  const { server } = env;
  const proxy = await startProxy({
    target: { host: '127.0.0.1', port: server.port },
    plan: [{ resetAfterBytes: 3_000_000 }, { resetAfterBytes: 7_000_000 }, { resetAfterBytes: 5_000_000 }],
  });
  try {
    const cfg = await writeAppAgentYaml(env.dir, pki, proxy.port, tree, {
      retry: { max_attempts: 6, initial_delay: '100ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '5s' },
      resume: { buffer_size: '64mb', chunk_size: '1mb' },
    });
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 120_000 });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    const { file } = await restoreTheBackup(env, tree);
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
  const env = await setup('stall');
  const { server } = env;
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: server.port }, plan: [{ stallAfterBytes: 4_000_000 }] });
  try {
    const cfg = await writeAppAgentYaml(env.dir, pki, proxy.port, tree, {
      retry: { max_attempts: 4, initial_delay: '100ms', max_delay: '1s', connect_timeout: '5s', read_timeout: '2s' },
    });
    const started = Date.now();
    const run = await runAgent(['--config', cfg, '--once'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.ok(Date.now() - started < 30_000);
    await restoreTheBackup(env, tree);
    assert.equal(committedLog(run.stdout).reconnects, 1);
    assert.ok(run.stdout.includes('no acknowledgement from the server'), 'the read timeout is what detected it');
  } finally {
    await proxy.close();
    await server.stop();
  }
});

/**
 * `--once --progress` in a pseudo-terminal (util-linux `script`), against a real server through a
 * throttling proxy so the bar is drawn many times: every field of the live line, the summary line,
 * and log lines that never land in the middle of the bar. Without a terminal: plain lines.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, REPO_ROOT, runAgent, writeYaml } from '../helpers/proc.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, makeWorkspace, showRun, startEnv, type Env } from './harness.js';

const MiB = 1024 * 1024;
const tmp = new TempDirs();
let pki: Pki;
let env: Env;
let proxy: Proxy;
let yaml: string;

before(async () => {
  const ws = await makeWorkspace(tmp, 'nbk-progress-', ['agent-a']);
  pki = ws.pki;
  const src = join(ws.work, 'src');
  fs.mkdirSync(src);
  for (let i = 0; i < 4; i++) fs.writeFileSync(join(src, `r${i}.bin`), randomBytes(2 * MiB));
  for (let i = 0; i < 300; i++) fs.writeFileSync(join(src, `small-${i}.txt`), `file ${i}\n`);
  env = await startEnv(tmp, pki, 'nbk-progress-env-', { storage: { max_backups: 10 } });
  // About 4 s for 8 MiB: enough redraws to look at.
  proxy = await startProxy({ target: { host: '127.0.0.1', port: env.server.port }, plan: Array.from({ length: 20 }, () => ({ throttleBytesPerSec: 2 * MiB })) });
  const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [{ name: 'app', storage: 'main', sources: [src] }]);
  // A warning in the middle of the run: a log line that must not tear the bar.
  Object.assign((cfg.backups as Record<string, unknown>[])[0], { before: 'echo warming up >&2' });
  yaml = join(ws.work, 'agent.yaml');
  await writeYaml(yaml, cfg);
});
after(async () => {
  await proxy.close();
  await env.server.stop();
  await tmp.cleanup();
});

/** Runs a command in a pseudo-terminal; resolves with everything the terminal showed. */
function inPty(command: string, timeoutMs: number): Promise<{ code: number | null; screen: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-q', '-e', '-f', '-c', command, '/dev/null'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let screen = '';
    child.stdout.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pty command timed out:\n${screen}`));
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, screen });
    });
  });
}

describe('--progress', { timeout: 120_000 }, () => {
  it('on a terminal: a live line with every field, log lines around it (never inside), a summary', async () => {
    const { code, screen } = await inPty(`${process.execPath} ${AGENT_BIN} --config ${yaml} --once --progress`, 60_000);
    assert.equal(code, 0, screen);
    // Each redraw starts with CR + erase-line; the text up to the next one is one state of the bar.
    const frames = screen.split('\r\x1b[2K').map((f) => f.replace(/\r?\n$/, '')).filter((f) => f.startsWith('[app] '));
    const bars = frames.filter((f) => / read .* · sent .* · .* MB\/s · .* files\/s · ETA .* · streams \d+ · retries \d+/.test(f));
    assert.ok(bars.length >= 5, `only ${bars.length} bar states:\n${JSON.stringify(screen.slice(0, 3000))}`);
    const withEta = bars.filter((b) => /^\[app\] \d+% read [\d.]+ MB of [\d.]+ MB · sent [\d.]+ MB · [\d.]+ MB\/s · \d+ files\/s · ETA \d+:\d\d · streams 1 · retries 0$/.test(b));
    assert.ok(withEta.length >= 1, `no bar with percent and ETA:\n${bars.join('\n')}`);
    const percents = withEta.map((b) => Number(/^\[app\] (\d+)%/.exec(b)![1]));
    // Percent follows what the server has: it climbs through the run, not just the reading.
    assert.ok(new Set(percents).size >= 3 && percents.some((p) => p > 0 && p < 90), `percents ${percents.join(',')}`);
    // The summary line.
    assert.match(screen, /\[app\] committed [\d.]+ MB in [\d.]+s \([\d.]+ MB read, [\d.]+ MB sent, \d+ files, [\d.]+ MB\/s, \d+ files\/s, retries 0\)/);
    assert.match(screen, /\[app\] committed .* 304 files/);
    // Log lines (JSON on stdout) never land inside the bar: each one starts a fresh line, or right
    // after the bar was erased (CR, erase-line), and the bar is redrawn only after its newline.
    const torn: string[] = [];
    for (let at = screen.indexOf('{"level"'); at !== -1; at = screen.indexOf('{"level"', at + 1)) {
      const before = screen.slice(Math.max(0, at - 5), at);
      if (!(at === 0 || before.endsWith('\n') || before.endsWith('\r\x1b[2K'))) torn.push(screen.slice(Math.max(0, at - 80), at + 40));
      const end = screen.indexOf('\n', at);
      assert.ok(end !== -1 && !screen.slice(at, end).includes('[app] '), 'the bar was drawn inside a log line');
    }
    assert.deepEqual(torn, [], 'a log line was written into the bar');
    assert.ok(screen.includes('"msg":"warming up"'), 'the hook line was logged');
  });

  it('without a terminal: plain lines, then the summary', async () => {
    const r = await runAgent(['--config', yaml, '--once', '--progress'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, showRun(r));
    assert.ok(!r.stderr.includes('\x1b['), 'no terminal control sequences when stderr is not a terminal');
    assert.match(r.stderr, /^\[app\] .* read .* · sent .* streams 1 · retries 0$/m);
    assert.match(r.stderr, /^\[app\] committed [\d.]+ MB in [\d.]+s \(.* 304 files, .*\)$/m);
  });
});

/**
 * The server's SIGHUP, against a real server and agent over mTLS on 127.0.0.1: logrotate's rename
 * followed by SIGHUP moves the log to a new file while backups go on; a server.yaml changed beyond
 * its logging section is named, not applied; one that no longer loads changes nothing; and a
 * SIGHUP that comes while the server is still starting (its configuration held back in a FIFO)
 * does not kill it, where the server's other commands still end on SIGHUP.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import type { Pki } from '../helpers/pki.js';
import { SERVER_BIN, parseLogLine, runAgent, spawnLogged, writeYaml, type LogLine, type LoggedProcess } from '../helpers/proc.js';
import { writeAndClose, writerOnceRead } from '../helpers/fifo.js';
import { TempDirs } from '../helpers/tmp.js';
import { waitUntilAsync } from '../helpers/wait.js';
import { makeWorkspace, serverConfigObject, showRun, writeAgentConfig } from './harness.js';

const tmp = new TempDirs();
let pki: Pki;
let work: string;
let source: string;

before(async () => {
  ({ work, pki } = await makeWorkspace(tmp, 'nbk-srvsig-', ['agent-a']));
  source = join(work, 'src');
  fs.mkdirSync(source);
  for (let i = 0; i < 20; i++) fs.writeFileSync(join(source, `f${i}.txt`), `file ${i}\n`.repeat(100 + i));
});
after(() => tmp.cleanup());

/** The JSON lines of a log file (none when it does not exist). */
function fileLogs(path: string): LogLine[] {
  let text = '';
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // A line still being written does not parse yet.
  return text
    .split('\n')
    .map(parseLogLine)
    .filter((l): l is LogLine => l !== null);
}

/** Waits for a line of the log file `path` that `pred` accepts (the server writes it asynchronously). */
async function waitForFileLog(path: string, pred: (l: LogLine) => boolean, p: LoggedProcess, what: string): Promise<LogLine> {
  let found: LogLine | undefined;
  await waitUntilAsync(
    async () => (found = fileLogs(path).find(pred)) !== undefined,
    15_000,
    `${what} in ${path}`,
    () => `${fileLogs(path).slice(-20).map((l) => JSON.stringify(l)).join('\n')}\n${p.output().slice(-20).join('\n')}`,
  );
  return found!;
}

async function backupOnce(dir: string, port: number): Promise<void> {
  const yaml = join(dir, 'agent.yaml');
  await writeAgentConfig(yaml, pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [source] }]);
  const r = await runAgent(['--config', yaml, '--once'], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, showRun(r));
}

describe('server signals', { timeout: 120_000 }, () => {
  it('SIGHUP after logrotate renamed the log: a new file at the new level, other changed sections named, backups go on; a broken server.yaml changes nothing', async () => {
    const dir = await tmp.make('nbk-srvsig-rotate-');
    const log = join(dir, 'server.log');
    const cfg = serverConfigObject(pki, { main: { base_dir: join(dir, 'store') } }) as Record<string, Record<string, unknown>>;
    cfg.logging = { level: 'info', format: 'json', file: log };
    const yaml = join(dir, 'server.yaml');
    await writeYaml(yaml, cfg);
    const server = spawnLogged(process.execPath, [SERVER_BIN, '--config', yaml]);
    try {
      const port = (await waitForFileLog(log, (l) => l.msg === 'listening', server, 'listening')).port as number;
      await backupOnce(dir, port);
      await waitForFileLog(log, (l) => l.msg === 'session committed', server, 'the first commit');

      fs.renameSync(log, `${log}.1`);
      cfg.logging.level = 'warn';
      (cfg.storages.main as Record<string, unknown>).max_backups = 2;
      await writeYaml(yaml, cfg);
      server.proc.kill('SIGHUP');
      // Before, SIGHUP had no handler: the server died of it.
      const later = await waitForFileLog(log, (l) => /applied when the server restarts/.test(String(l.msg)), server, 'the warning');
      assert.deepEqual(later.sections, ['storages']);

      const rotatedSize = fs.statSync(`${log}.1`).size;
      await backupOnce(dir, port);

      fs.writeFileSync(yaml, 'server: [\n');
      server.proc.kill('SIGHUP');
      const failed = await waitForFileLog(log, (l) => l.msg === 'SIGHUP: nothing changed', server, 'the refusal');
      assert.match(String(failed.err), /server\.yaml/);
      // Lines are written in order: everything the backup logged went out before this error line.
      assert.equal(fs.statSync(`${log}.1`).size, rotatedSize, 'nothing more is written to the renamed file');
      assert.deepEqual(
        fileLogs(log).filter((l) => (l.level as number) < 40),
        [],
        'level warn applies: no info line in the new file',
      );
      await backupOnce(dir, port);

      server.proc.kill('SIGTERM');
      assert.deepEqual(await server.waitForExit(10_000), { code: 0, signal: null });
    } finally {
      await server.stop(2000).catch(() => undefined);
    }
  });

  it('SIGHUP while the server is still starting: it starts and applies it; verify still ends on SIGHUP', async () => {
    const dir = await tmp.make('nbk-srvsig-early-');
    const text = stringify(serverConfigObject(pki, { main: { base_dir: join(dir, 'store') } }));
    const fifo = join(dir, 'server.yaml');
    execFileSync('mkfifo', [fifo]);
    const server = spawnLogged(process.execPath, [SERVER_BIN, '--config', fifo]);
    try {
      let fd = await writerOnceRead(fifo, server);
      server.proc.kill('SIGHUP');
      writeAndClose(fd, text);
      const listening = await server.waitForLog((l) => l.msg === 'listening', 15_000);
      // Applied once started: server.yaml is read again, through the same FIFO.
      fd = await writerOnceRead(fifo, server);
      writeAndClose(fd, text);
      await server.waitForLog((l) => l.msg === 'SIGHUP: logging settings applied, log file reopened', 10_000);
      await backupOnce(dir, listening.port as number);

      const verify = spawnLogged(process.execPath, [SERVER_BIN, 'verify', '--config', fifo]);
      fd = await writerOnceRead(fifo, verify);
      verify.proc.kill('SIGHUP');
      try {
        assert.deepEqual(await verify.waitForExit(10_000), { code: null, signal: 'SIGHUP' });
      } finally {
        fs.closeSync(fd);
      }
      server.proc.kill('SIGTERM');
      assert.deepEqual(await server.waitForExit(10_000), { code: 0, signal: null });
    } finally {
      await server.stop(2000).catch(() => undefined);
    }
  });
});

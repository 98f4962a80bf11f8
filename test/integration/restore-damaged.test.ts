/**
 * `restore` and `find` over real mTLS when an archive is damaged or its member names are hostile:
 * a gzip error is a damaged-archive error naming the archive (exit 1, not "internal error"); `find`
 * names an unreadable archive on stderr and still lists the hits of the others; names with
 * terminal control characters are printed escaped, never raw.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Pki } from '../helpers/pki.js';
import { runAgent, startServer, writeYaml, type AgentResult, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { agentConfigObject, committedBackups, flipMiddleByte, makeWorkspace, showRun, writeServerConfig } from './harness.js';

const T = { timeoutMs: 60_000 };
const ESC = '\x1b';
/** Retitles and recolours a terminal, then forges an output line of its own. */
const EVIL = `evil${ESC}]0;pwned\x07${ESC}[31mred\nforged: line.txt`;
const EVIL_SHOWN = 'evil\\033]0;pwned\\a\\033[31mred\\nforged: line.txt';

const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');

describe('restore and find over a damaged archive and hostile names', { timeout: 120_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let yaml: string;
  let src: string;
  let archives: string[];
  const dir = () => join(work, 'store', 'agent-a', 'app');

  before(async () => {
    ({ work, pki } = await makeWorkspace(tmp, 'nbk-it-damaged-', ['agent-a']));
    const serverYaml = join(work, 'server.yaml');
    await writeServerConfig(serverYaml, pki, { main: { base_dir: join(work, 'store'), max_backups: 5 } });
    server = await startServer(serverYaml);
    src = join(work, 'src');
    fs.mkdirSync(src);
    // 4 MiB that do not compress come first (by name): the middle of the archive is inside them.
    fs.writeFileSync(join(src, 'big.bin'), crypto.randomBytes(4 * 1024 * 1024));
    fs.writeFileSync(join(src, EVIL), 'x\n');
    fs.writeFileSync(join(src, 'ok.txt'), 'ok\n');
    yaml = join(work, 'agent.yaml');
    await writeYaml(yaml, agentConfigObject(pki, 'agent-a', server.port, [{ name: 'app', storage: 'main', sources: [src] }]));
    for (let i = 0; i < 3; i++) {
      const r = await runAgent(['--config', yaml, '--once'], T);
      assert.equal(r.code, 0, showRun(r));
    }
    archives = await committedBackups(dir());
    assert.equal(archives.length, 3);
  });

  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  it('find prints hostile names escaped, one line per archive', async () => {
    const r = await runAgent(['find', '--config', yaml, '**/evil*'], T);
    assert.equal(r.code, 0, showRun(r));
    assert.ok(!r.stdout.includes(ESC) && !r.stdout.includes('\x07'), `raw control characters on stdout:\n${JSON.stringify(r.stdout)}`);
    const out = lines(r.stdout);
    assert.equal(out.length, 3, r.stdout);
    for (const l of out) assert.ok(l.endsWith(`${src.slice(1)}/${EVIL_SHOWN}`), l);
  });

  it('restore reports hostile names escaped', async () => {
    const into = await tmp.make('nbk-it-damaged-r-');
    assert.equal((await runAgent(['restore', '--config', yaml, '--backup', 'app', '--to', into], T)).code, 0);
    // Cut short, as by a kill -9, then restored again without --force: it is named, as differing.
    fs.truncateSync(join(into, src.slice(1), EVIL), 1);
    const r = await runAgent(['restore', '--config', yaml, '--backup', 'app', '--to', into], T);
    assert.equal(r.code, 1, showRun(r));
    assert.ok(!r.stderr.includes(ESC) && !r.stderr.includes('\x07'), `raw control characters on stderr:\n${JSON.stringify(r.stderr)}`);
    assert.ok(!lines(r.stderr).some((l) => l.startsWith('forged')), r.stderr);
    assert.ok(lines(r.stderr).includes(`nbackup-agent: ${src.slice(1)}/${EVIL_SHOWN}: not restored: it exists and differs: 1 byte, not 2 (--force replaces it)`), r.stderr);
  });

  describe('the oldest archive damaged, without its index', () => {
    let damaged: string;
    before(() => {
      damaged = archives[0];
      flipMiddleByte(join(dir(), damaged), 0xff);
      fs.rmSync(join(dir(), `${damaged}.index.gz`));
    });

    it('restore of it fails as a damaged archive, named, exit 1', async () => {
      const into = await tmp.make('nbk-it-damaged-r-');
      const r: AgentResult = await runAgent(['restore', '--config', yaml, '--backup', 'app', '--at', damaged, '--to', into], T);
      assert.equal(r.code, 1, showRun(r));
      const err = lines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0], new RegExp(`^nbackup-agent: main/app/${damaged.replace(/\./g, '\\.')}: corrupt gzip data: \\S`), r.stderr);
    });

    it('find names it on stderr, still lists the hits of the later archives, and exits 1', async () => {
      const r = await runAgent(['find', '--config', yaml, '**/ok.txt'], T);
      assert.equal(r.code, 1, showRun(r));
      const out = lines(r.stdout);
      assert.equal(out.length, 2, showRun(r));
      for (const l of out) assert.match(l, /^app {2}\S+ \S+ UTC {2}file {7} +3 {2}\S+Z {2}\S+\/ok\.txt$/);
      const err = lines(r.stderr);
      assert.equal(err.length, 2, r.stderr);
      assert.match(err[0], new RegExp(`^nbackup-agent: main/app/${damaged.replace(/\./g, '\\.')}: corrupt gzip data: .*; archive skipped$`));
      assert.equal(err[1], 'nbackup-agent: 1 of 3 archives could not be searched (above)');
    });
  });
});

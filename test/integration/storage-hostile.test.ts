/**
 * A storage others can write to (a shared mount): symlinks, FIFOs, folders and odd names planted
 * under base_dir, and folders swapped or removed while the server runs. Real server, real agent,
 * real mTLS on 127.0.0.1. Nothing may be written, renamed, deleted, read out or served outside
 * base_dir; nothing odd may crash or hang the server or cost a good backup.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AckStatus, FinalStatus, ReadStatus, ReadTarget } from '../../protocol/constants.js';
import {
  decodeArchiveInfo,
  decodeListHead,
  decodeReadHead,
  encodeListRequest,
  encodeReadRequest,
  encodeSingleMode,
  type ArchiveInfo,
  type ListHead,
  type ReadHead,
} from '../../protocol/frames.js';
import type { Pki } from '../helpers/pki.js';
import { SERVER_BIN, runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { randomBytesSeeded } from '../helpers/tree.js';
import { agentConfigObject, assertNoInternalError, committedBackups, makeWorkspace, serverTail, showRun, waitForTempBytes, writeServerConfig } from './harness.js';
import { rawAgent, rawHandshake, readUntilFinal, trailerFor } from './raw-client.js';

const T = { timeoutMs: 30_000 };
const OLD = '2000-01-01T00-00-00-000.tar.gz';

describe('a storage with things planted in it', { timeout: 110_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let agentYaml: (port: number) => Promise<string>;
  const servers: ServerHandle[] = [];

  before(async () => {
    ({ work, pki } = await makeWorkspace(tmp, 'nbk-hostile-', ['agent-a']));
    const src = join(work, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, 'f.txt'), 'data\n');
    agentYaml = async (port) => {
      const file = join(work, `agent-${port}.yaml`);
      await writeYaml(file, agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [src] }]));
      return file;
    };
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await tmp.cleanup();
  });

  /** A fresh store (max_backups 2) and, outside it, a folder of someone else's archive-named files. */
  async function setUp(prefix: string): Promise<{ dir: string; store: string; outside: string; yaml: string }> {
    const dir = await tmp.make(prefix);
    const store = join(dir, 'store');
    const outside = join(dir, 'outside');
    fs.mkdirSync(join(outside, 'app'), { recursive: true });
    fs.mkdirSync(store);
    for (let d = 1; d <= 4; d++) fs.writeFileSync(join(outside, 'app', `2000-01-0${d}T00-00-00-000.tar.gz`), `not ours ${d}\n`);
    fs.writeFileSync(join(outside, 'victim.txt'), 'precious\n');
    const yaml = join(dir, 'server.yaml');
    await writeServerConfig(yaml, pki, { main: { base_dir: store, max_backups: 2 } });
    return { dir, store, outside, yaml };
  }

  async function start(yaml: string): Promise<ServerHandle> {
    const s = await startServer(yaml);
    servers.push(s);
    return s;
  }

  /** Every file under `outside`, with its content: what must not change. */
  function snapshot(outside: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of fs.readdirSync(outside, { recursive: true, withFileTypes: true })) {
      const p = join(e.parentPath, e.name);
      if (e.isFile()) out[p.slice(outside.length)] = fs.readFileSync(p, 'utf8');
      else if (!e.isDirectory()) out[p.slice(outside.length)] = `(${e.isFIFO() ? 'fifo' : 'other'})`;
    }
    return out;
  }

  async function list(port: number, backup = ''): Promise<{ head: ListHead; items: ArchiveInfo[] }> {
    const c = rawAgent(port, pki);
    try {
      await c.connected();
      c.write(encodeListRequest({ agent: 'agent-a', backup }));
      const head = await c.read(decodeListHead, 5000, 'LIST head');
      const items: ArchiveInfo[] = [];
      for (let i = 0; i < head.count && i < 100; i++) items.push(await c.read(decodeArchiveInfo, 5000, 'archive info'));
      return { head, items };
    } finally {
      c.destroy();
    }
  }

  async function read(port: number, name: string, target: ReadTarget = ReadTarget.ARCHIVE): Promise<{ head: ReadHead; body: Buffer }> {
    const c = rawAgent(port, pki);
    try {
      await c.connected();
      c.write(encodeReadRequest({ agent: 'agent-a', storage: 'main', backup: 'app', name, target, offset: 0, length: 0 }));
      const head = await c.read(decodeReadHead, 5000, `READ head of ${name}`);
      await c.waitUntil(() => c.unread.length >= head.length, 5000, 'READ body');
      return { head, body: Buffer.from(c.unread.subarray(0, head.length)) };
    } finally {
      c.destroy();
    }
  }

  it('a symlinked agent or backup folder: no commit, rotation, LIST or READ goes through it', async () => {
    const { store, outside, yaml } = await setUp('nbk-hostile-link-');
    const server = await start(yaml);
    const before = snapshot(outside);
    for (const plant of ['agent', 'backup'] as const) {
      fs.rmSync(join(store, 'agent-a'), { recursive: true, force: true });
      if (plant === 'agent') fs.symlinkSync(outside, join(store, 'agent-a'));
      else {
        fs.mkdirSync(join(store, 'agent-a'));
        fs.symlinkSync(join(outside, 'app'), join(store, 'agent-a', 'app'));
      }
      const r = await runAgent(['--config', await agentYaml(server.port), '--once'], T);
      assert.notEqual(r.code, 0, `${plant}: the backup must be refused\n${showRun(r)}`);
      assert.match(r.stderr, /STORAGE_UNAVAILABLE.*is a symlink/, `${plant}: the agent is told why\n${showRun(r)}`);
      assert.deepEqual(snapshot(outside), before, `${plant}: nothing outside base_dir was written or deleted\n${serverTail(server)}`);
      const l = await list(server.port);
      assert.equal(l.head.status, ReadStatus.OK);
      assert.deepEqual(l.items.map((i) => i.name), [], `${plant}: LIST shows nothing from outside`);
      const rd = await read(server.port, OLD);
      assert.equal(rd.head.status, ReadStatus.NOT_FOUND, `${plant}: READ serves nothing from outside: ${rd.head.message}`);
      assert.equal(rd.body.length, 0);
      await server.waitForLog((l) => String(l.msg).startsWith('list skipped what is not an archive the server made') && JSON.stringify(l.first).includes('is a symlink'), 5000);
    }
    const ret = await runAgent(['retention', '--config', yaml, '--agent', 'agent-a'], { script: SERVER_BIN, ...T });
    assert.equal(ret.code, 0, showRun(ret));
    assert.match(ret.stdout, /skipped .*agent-a\/app {2}\(is a symlink/, showRun(ret));
    assert.deepEqual(snapshot(outside), before, 'retention deleted nothing outside base_dir');
    assertNoInternalError(server);
  });

  it('a folder swapped for a symlink during a backup: the commit refuses, nothing is linked or rotated outside', async () => {
    const { store, outside, yaml } = await setUp('nbk-hostile-swap-');
    const server = await start(yaml);
    const c = rawAgent(server.port, pki);
    const ack = await rawHandshake(c, { agent: 'agent-a' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    const body = randomBytesSeeded(100_000, 3);
    await c.writeFlushed(body);
    await waitForTempBytes(join(store, 'agent-a', 'app'), ack.sessionId, body.length);
    // Someone who can read the folder sees the session's name and prepares a file under it outside.
    const tempName = `.${ack.sessionId}.tar.gz.tmp`;
    fs.writeFileSync(join(outside, 'app', tempName), body);
    const before = snapshot(outside);
    fs.renameSync(join(store, 'agent-a', 'app'), join(store, 'agent-a', 'moved'));
    fs.symlinkSync(join(outside, 'app'), join(store, 'agent-a', 'app'));
    c.write(trailerFor(body));
    c.socket.end();
    const { final } = await readUntilFinal(c, { timeoutMs: 10_000, errorMeansNoFinal: true });
    c.destroy();
    assert.equal(final, FinalStatus.WRITE_ERROR, serverTail(server));
    assert.deepEqual(snapshot(outside), before, `no archive linked, no .sha256 written, nothing rotated outside\n${serverTail(server)}`);
    assertNoInternalError(server);
  });

  it('a commit that cannot write the SHA-256 beside its archive takes the archive name back: the session fails whole', async () => {
    const { store, yaml } = await setUp('nbk-hostile-sidecar-');
    const server = await start(yaml);
    const dir = join(store, 'agent-a', 'app');
    fs.mkdirSync(dir, { recursive: true });
    // An archive named in the future makes the next name known; a folder where its sidecar's
    // temporary file goes makes the sidecar write fail after the archive was linked.
    fs.writeFileSync(join(dir, '2099-01-01T00-00-00-000.tar.gz'), 'planted\n');
    const next = '2099-01-01T00-00-00-001.tar.gz';
    fs.mkdirSync(join(dir, `.${next}.sha256.tmp`));
    const backup = async (seed: number): Promise<number | null> => {
      const c = rawAgent(server.port, pki);
      try {
        const ack = await rawHandshake(c, { agent: 'agent-a' });
        assert.equal(ack.status, AckStatus.GO, ack.message);
        c.write(encodeSingleMode());
        const body = randomBytesSeeded(50_000, seed);
        await c.writeFlushed(body);
        c.write(trailerFor(body));
        c.socket.end();
        return (await readUntilFinal(c, { timeoutMs: 10_000, errorMeansNoFinal: true })).final;
      } finally {
        c.destroy();
      }
    };
    assert.equal(await backup(5), FinalStatus.WRITE_ERROR, serverTail(server));
    await server.waitForLog((l) => /the archive could not be committed/.test(String(l.reason)), 5000);
    assert.deepEqual(fs.readdirSync(dir).sort(), [`.${next}.sha256.tmp`, '2099-01-01T00-00-00-000.tar.gz'], `no archive without its sidecar, no temporary file\n${serverTail(server)}`);
    // Once the obstacle is gone, the next backup commits under that name, sidecar and all.
    fs.rmdirSync(join(dir, `.${next}.sha256.tmp`));
    assert.equal(await backup(6), FinalStatus.OK, serverTail(server));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['2099-01-01T00-00-00-000.tar.gz', next, `${next}.sha256`]);
    assert.equal(fs.readFileSync(join(dir, `${next}.sha256`), 'utf8'), `${createHash('sha256').update(randomBytesSeeded(50_000, 6)).digest('hex')}  ${next}\n`);
    assertNoInternalError(server);
  });

  it('a planted session record whose temporary file is a symlink: a restart does not truncate the target', async () => {
    const { store, outside, yaml } = await setUp('nbk-hostile-adopt-');
    const dir = join(store, 'agent-a', 'app');
    fs.mkdirSync(dir, { recursive: true });
    for (const [id, mode] of [['00000000-0000-4000-8000-000000000001', 'parallel'], ['00000000-0000-4000-8000-000000000002', 'single']] as const) {
      fs.writeFileSync(join(dir, `.${id}.session.tmp`), JSON.stringify({ format: 1, id, agent: 'agent-a', storage: 'main', backup: 'app', mode, version: 5, maxStreams: 2, chunkSize: 1 << 20 }));
      fs.symlinkSync(join(outside, 'victim.txt'), join(dir, `.${id}.tar.gz.tmp`));
      fs.symlinkSync(join(outside, 'victim.txt'), join(dir, `.${id}.chunks.tmp`));
    }
    const before = snapshot(outside);
    const server = await start(yaml);
    assert.deepEqual(snapshot(outside), before, `the file behind the symlinks is untouched\n${serverTail(server)}`);
    assert.ok(!server.logs().some((l) => l.msg === 'session taken up after a restart; waiting for its agent'), serverTail(server));
    assert.deepEqual(fs.readdirSync(dir), [], 'the planted records and links were swept (the links, not their target)');
    const r = await runAgent(['--config', await agentYaml(server.port), '--once'], T);
    assert.equal(r.code, 0, showRun(r));
    assertNoInternalError(server);
  });

  it('a folder and a FIFO under session names: the server starts, says so, and leaves them', async () => {
    const { store, yaml } = await setUp('nbk-hostile-sweep-');
    const dir = join(store, 'agent-a', 'app');
    fs.mkdirSync(join(dir, '.planted.tmp'), { recursive: true });
    execFileSync('mkfifo', [join(dir, '.00000000-0000-4000-8000-000000000003.session.tmp')]);
    const server = await start(yaml);
    const said = await server.waitForLog((l) => String(l.msg).startsWith('the storage holds what the server did not make'), 5000);
    assert.match(JSON.stringify(said.first), /\.planted\.tmp is a folder/);
    assert.match(JSON.stringify(said.first), /000000000003\.session\.tmp is a FIFO/);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['.00000000-0000-4000-8000-000000000003.session.tmp', '.planted.tmp']);
    const r = await runAgent(['--config', await agentYaml(server.port), '--once'], T);
    assert.equal(r.code, 0, showRun(r));
    assertNoInternalError(server);
  });

  it('odd things named like archives: commits, rotation, LIST, READ, verify and restore go on; none is deleted or waited on', async () => {
    const { dir: work2, store, yaml } = await setUp('nbk-hostile-odd-');
    const dir = join(store, 'agent-a', 'app');
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(join(dir, OLD)); // a folder
    execFileSync('mkfifo', [join(dir, '2000-01-02T00-00-00-000.tar.gz')]); // a FIFO
    fs.writeFileSync(join(dir, '2000-01-03T00-00-00-000.tar.gz'), ''); // zero-length: an archive, a bad one
    execFileSync('mkfifo', [join(dir, '2000-01-03T00-00-00-000.tar.gz.sha256')]); // its .sha256 a FIFO
    fs.writeFileSync(join(dir, '2026-13-45T99-00-00-000.tar.gz'), 'no such time\n'); // not a time at all
    for (let i = 0; i < 3000; i++) fs.writeFileSync(join(dir, `stray-${i}`), '');
    const server = await start(yaml);
    const yamlA = await agentYaml(server.port);
    const today = new Date().toISOString().slice(0, 10);
    for (let i = 0; i < 2; i++) {
      const r = await runAgent(['--config', yamlA, '--once'], T);
      assert.equal(r.code, 0, `backup ${i + 1} commits and its rotation does not fail\n${showRun(r)}\n${serverTail(server)}`);
    }
    const archives = await committedBackups(dir);
    const ours = archives.filter((n) => n.startsWith(today));
    assert.equal(ours.length, 2, `the new archives are named now, not after a bogus time: ${archives.join(', ')}`);
    for (const n of [OLD, '2000-01-02T00-00-00-000.tar.gz', '2026-13-45T99-00-00-000.tar.gz', 'stray-2999']) assert.ok(fs.existsSync(join(dir, n)), `${n} left alone`);
    assert.ok(fs.statSync(join(dir, OLD)).isDirectory());
    // The zero-length one is a regular file under an archive name: the oldest of three, max_backups 2.
    assert.ok(!fs.existsSync(join(dir, '2000-01-03T00-00-00-000.tar.gz')), 'rotation removed the oldest regular archive');
    assert.ok(fs.lstatSync(join(dir, '2000-01-03T00-00-00-000.tar.gz.sha256')).isFIFO(), 'a FIFO beside it is not removed');

    fs.writeFileSync(join(dir, '2000-01-04T00-00-00-000.tar.gz'), '');
    const l = await list(server.port);
    assert.equal(l.head.status, ReadStatus.OK);
    assert.deepEqual(l.items.map((i) => i.name), ['2000-01-04T00-00-00-000.tar.gz', ...ours], 'LIST answers with the regular archives only');
    const fifo = await read(server.port, '2000-01-02T00-00-00-000.tar.gz');
    assert.equal(fifo.head.status, ReadStatus.NOT_FOUND, 'READ of a FIFO is refused, not waited on');
    const noIndex = await read(server.port, OLD, ReadTarget.INDEX);
    assert.equal(noIndex.head.status, ReadStatus.NOT_FOUND);
    fs.rmSync(join(dir, ours[0]));
    const gone = await read(server.port, ours[0]);
    assert.equal(gone.head.status, ReadStatus.NOT_FOUND, 'an archive removed after LIST: NOT_FOUND');
    assert.match(gone.head.message, /does not exist/);
    fs.writeFileSync(join(dir, `${ours[1]}.sha256`), 'garbage\n');

    const v = await runAgent(['verify', '--config', yaml], { script: SERVER_BIN, ...T });
    assert.equal(v.code, 1, showRun(v));
    assert.match(v.stdout, /^SKIP {2}\S+2000-01-01T00-00-00-000\.tar\.gz {2}is a folder/m, showRun(v));
    assert.match(v.stdout, /^SKIP {2}\S+2000-01-02T00-00-00-000\.tar\.gz {2}is a FIFO/m, showRun(v));
    assert.match(v.stdout, /^BAD {2}\S+2000-01-04T00-00-00-000\.tar\.gz .*not a valid compressed tar/m, showRun(v));
    assert.match(v.stdout, new RegExp(`^BAD  \\S+${ours[1].replace(/\./g, '\\.')} .*its \\.sha256 is not a sha256sum line`, 'm'), showRun(v));
    const ret = await runAgent(['retention', '--config', yaml], { script: SERVER_BIN, ...T });
    assert.equal(ret.code, 0, showRun(ret));
    assert.ok(fs.statSync(join(dir, OLD)).isDirectory() && fs.lstatSync(join(dir, '2000-01-02T00-00-00-000.tar.gz')).isFIFO());

    const sha = createHash('sha256').update(fs.readFileSync(join(dir, ours[1]))).digest('hex');
    fs.writeFileSync(join(dir, `${ours[1]}.sha256`), `${sha}  ${ours[1]}\n`);
    const into = join(work2, 'restore');
    const rs = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--to', into], T);
    assert.equal(rs.code, 0, showRun(rs));
    assert.equal(fs.readFileSync(join(into, work.slice(1), 'src', 'f.txt'), 'utf8'), 'data\n');
    assertNoInternalError(server);
  });

  it('the backup folder deleted during a backup: WRITE_ERROR, nothing committed, the server serves on', async () => {
    const { store, yaml } = await setUp('nbk-hostile-gone-');
    const server = await start(yaml);
    const c = rawAgent(server.port, pki);
    const ack = await rawHandshake(c, { agent: 'agent-a' });
    assert.equal(ack.status, AckStatus.GO, ack.message);
    c.write(encodeSingleMode());
    const body = randomBytesSeeded(50_000, 4);
    await c.writeFlushed(body);
    await waitForTempBytes(join(store, 'agent-a', 'app'), ack.sessionId, body.length);
    fs.rmSync(join(store, 'agent-a', 'app'), { recursive: true });
    c.write(trailerFor(body));
    c.socket.end();
    const { final } = await readUntilFinal(c, { timeoutMs: 10_000, errorMeansNoFinal: true });
    c.destroy();
    assert.equal(final, FinalStatus.WRITE_ERROR);
    assert.deepEqual(await committedBackups(join(store, 'agent-a', 'app')), []);
    const r = await runAgent(['--config', await agentYaml(server.port), '--once'], T);
    assert.equal(r.code, 0, showRun(r));
    assertNoInternalError(server);
  });
});

/**
 * Restore from the agent over real mTLS (protocol v5): list, restore into a folder (contents, links,
 * modes, mtimes, names that are not UTF-8, a sparse file), --stdout | GNU tar, patterns, --force,
 * find, zstd, an agent that may not read another's backups, and a hostile archive that must not
 * write outside the target folder.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReadStatus, ReadTarget } from '../../protocol/constants.js';
import { decodeIndexAck, decodeReadHead, encodeIndexPut, encodeListRequest, encodeReadRequest, decodeListHead } from '../../protocol/frames.js';
import { assertTreesEqual } from '../helpers/compare.js';
import type { Pki } from '../helpers/pki.js';
import { AGENT_BIN, SERVER_BIN, runAgent, startServer, writeYaml, type ServerHandle } from '../helpers/proc.js';
import { TempDirs } from '../helpers/tmp.js';
import { makeTree, type TreeInfo } from '../helpers/tree.js';
import { agentConfigObject, committedBackups, makeWorkspace, restoredPath, showRun, writeServerConfig, flipMiddleByte } from './harness.js';
import { rawAgent } from './raw-client.js';
import { startProxy } from '../helpers/proxy.js';
import { pollUntil } from '../helpers/wait.js';

const T = { timeoutMs: 60_000 };
const MiB = 1024 * 1024;

describe('restore, list and find from the agent', { timeout: 240_000 }, () => {
  const tmp = new TempDirs();
  let work: string;
  let pki: Pki;
  let server: ServerHandle | undefined;
  let store: string;
  let tree: TreeInfo;
  let yamlA: string;
  let serverYaml: string;
  const latin1 = (s: string) => Buffer.from(s, 'latin1');

  before(async () => {
    ({ work, pki } = await makeWorkspace(tmp, 'nbackup-it-restore-', ['agent-a', 'agent-b']));
    store = join(work, 'store');
    serverYaml = join(work, 'server.yaml');
    await writeServerConfig(serverYaml, pki, { main: { base_dir: store, max_backups: 5 } });
    server = await startServer(serverYaml);
    tree = await makeTree(join(work, 'src'));
    // What plain trees lack: names that are not UTF-8, and a sparse file.
    const odd = Buffer.concat([Buffer.from(join(tree.root, 'odd')), Buffer.from('/')]);
    fs.mkdirSync(odd);
    fs.writeFileSync(Buffer.concat([odd, latin1('caf\xe9.txt')]), 'latin-1 name\n');
    fs.mkdirSync(Buffer.concat([odd, latin1('d\xff')]));
    fs.writeFileSync(Buffer.concat([odd, latin1('d\xff/inner.txt')]), 'inside\n');
    const sparse = join(tree.root, 'odd', 'sparse.img');
    const fd = fs.openSync(sparse, 'w');
    fs.writeSync(fd, Buffer.alloc(4096, 0x61), 0, 4096, 1 * MiB);
    fs.writeSync(fd, Buffer.alloc(4096, 0x62), 0, 4096, 40 * MiB);
    fs.ftruncateSync(fd, 64 * MiB);
    fs.closeSync(fd);
    fs.utimesSync(join(tree.root, 'odd'), 1_600_000_000, 1_600_000_000);
    yamlA = join(work, 'agent-a.yaml');
    const cfg = agentConfigObject(pki, 'agent-a', server.port, [
      { name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes },
      { name: 'zst', storage: 'main', sources: [join(tree.root, 'unicode')] },
      { name: 'hostile', storage: 'main', sources: [join(tree.root, 'unicode')] },
    ]);
    (cfg.backups as Record<string, unknown>[])[1].compression = { format: 'zstd', level: 3 };
    await writeYaml(yamlA, cfg);
    for (const backup of ['app', 'app', 'zst']) {
      const r = await runAgent(['--config', yamlA, '--once', '--backup', backup], T);
      assert.equal(r.code, 0, showRun(r));
    }
  });

  after(async () => {
    await server?.stop();
    await tmp.cleanup();
  });

  const compare = (into: string) => assertTreesEqual(tree.root, restoredPath(into, tree.root), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });

  it('list shows each backup with its archives: time, size, format, storage and SHA-256', async () => {
    const r = await runAgent(['list', '--config', yamlA], T);
    assert.equal(r.code, 0, showRun(r));
    const archives = await committedBackups(join(store, 'agent-a', 'app'));
    assert.equal(archives.length, 2);
    assert.match(r.stdout, /^backup app: 2 archives$/m);
    assert.match(r.stdout, /^backup zst: 1 archive$/m);
    for (const name of archives) {
      const file = join(store, 'agent-a', 'app', name);
      const sha = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
      const shown = name.replace(/^(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})-(\d{3}).*$/, '$1 $2:$3:$4.$5 UTC');
      const members = execFileSync('tar', ['-tzf', file]).toString('latin1').split('\n').filter(Boolean).length;
      assert.match(r.stdout, new RegExp(`^  ${shown} +\\S+ +\\S+ +${members} +gzip +main +${sha.slice(0, 16)}$`, 'm'), r.stdout);
    }
    assert.match(r.stdout, / zstd +main /);
    const only = await runAgent(['list', '--config', yamlA, '--backup', 'zst'], T);
    assert.doesNotMatch(only.stdout, /backup app/);
  });

  it('restore --to brings the whole tree back exactly, SHA-256 verified; again, what is there as in the archive is left alone and what differs is replaced only with --force', async () => {
    const into = await tmp.make('nbackup-it-r1-');
    const r = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--to', into], T);
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stderr, /SHA-256 verified/);
    await compare(into);
    const sparse = join(restoredPath(into, tree.root), 'odd', 'sparse.img');
    assert.ok(fs.statSync(sparse).blocks * 512 < 4 * MiB, 'the sparse file keeps its holes');
    const again = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--to', into], T);
    assert.equal(again.code, 0, showRun(again));
    assert.match(again.stderr, /^restored app .*: 0 files \(0b\), .*; \d+ members already there as in the archive, left alone; SHA-256 verified/, showRun(again));
    fs.writeFileSync(join(restoredPath(into, tree.root), tree.notable.text), 'changed');
    const differs = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--to', into], T);
    assert.equal(differs.code, 1, showRun(differs));
    const named = differs.stderr.split('\n').filter((l) => l.startsWith('nbackup-agent: '));
    assert.equal(named.length, 1, showRun(differs));
    assert.match(named[0], new RegExp(`/${tree.notable.text}: not restored: it exists and differs: 7 bytes, not \\d+ \\(--force replaces it\\)$`), showRun(differs));
    const forced = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--to', into, '--force'], T);
    assert.equal(forced.code, 0, showRun(forced));
    await compare(into);
  });

  it('restore --stdout | tar -xzf - gives the same tree', async () => {
    const into = await tmp.make('nbackup-it-r2-');
    const r = spawnSync('bash', ['-o', 'pipefail', '-c', `node "${AGENT_BIN}" restore --config "${yamlA}" --backup app --stdout | tar -xzf - -C "${into}"`], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /SHA-256 verified/);
    await compare(into);
  });

  it('restore with patterns brings only what they select; --at picks an archive; zstd restores too', async () => {
    const archives = await committedBackups(join(store, 'agent-a', 'app'));
    const into = await tmp.make('nbackup-it-r3-');
    const rel = tree.root.replace(/^\//, '');
    const r = await runAgent(['restore', '--config', yamlA, '--backup', 'app', '--at', archives[0].replace(/\.tar\.gz$/, ''), '--to', into, `${rel}/unicode`, `**/${tree.notable.empty}`], T);
    assert.equal(r.code, 0, showRun(r));
    const got = execFileSync('find', [into, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n').map((f) => f.slice(restoredPath(into, tree.root).length + 1)).sort();
    assert.deepEqual(got, [tree.notable.cafe, tree.notable.emoji, tree.notable.empty, tree.notable.japanese].sort());
    const z = await tmp.make('nbackup-it-r4-');
    const rz = await runAgent(['restore', '--config', yamlA, '--backup', 'zst', '--to', z], T);
    assert.equal(rz.code, 0, showRun(rz));
    await assertTreesEqual(join(tree.root, 'unicode'), restoredPath(z, join(tree.root, 'unicode')));
  });

  it('find lists every archive holding a path, with size and mtime', async () => {
    const r = await runAgent(['find', '--config', yamlA, '**/odd/caf*.txt'], T);
    assert.equal(r.code, 0, showRun(r));
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2, r.stdout);
    for (const l of lines) assert.match(l, /^app {2}\S+ \S+ UTC {2}file {7} +13 {2}\S+Z {2}.*odd\/caf\\351\.txt$/);
    const none = await runAgent(['find', '--config', yamlA, 'no/such/thing'], T);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /nothing matches/);
  });

  // 24 MiB of tar and a little more: 1 MiB blocks for gzip, 4 MiB for zstd (codecs.ts).
  const BLOCK: Record<string, number> = { bigg: MiB, bigz: 4 * MiB };
  const BLOCKS: Record<string, number[]> = { bigg: [24, 25], bigz: [6, 7] };

  it('one file through the index: only the blocks that hold it cross the wire (counted by a proxy), gzip and zstd', async () => {
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: server!.port } });
    try {
      // A tree of several blocks: 24 MiB of data that does not compress, and small files among it.
      const big = join(work, 'big');
      for (let i = 0; i < 6; i++) fs.mkdirSync(join(big, `part${i}`), { recursive: true });
      for (let i = 0; i < 6; i++) {
        fs.writeFileSync(join(big, `part${i}`, 'noise.bin'), crypto.randomBytes(4 * MiB));
        fs.writeFileSync(join(big, `part${i}`, 'note.txt'), `note ${i}\n`.repeat(1000));
      }
      fs.symlinkSync('note.txt', join(big, 'part3', 'to-note'));
      const yaml = join(work, 'agent-a-proxy.yaml');
      const cfg = agentConfigObject(pki, 'agent-a', proxy.port, [
        { name: 'bigz', storage: 'main', sources: [big] },
        { name: 'bigg', storage: 'main', sources: [big] },
      ]);
      (cfg.backups as Record<string, unknown>[])[0].compression = { format: 'zstd', level: 3 };
      await writeYaml(yaml, cfg);
      for (const backup of ['bigz', 'bigg']) {
        const b = await runAgent(['--config', yaml, '--once', '--backup', backup], T);
        assert.equal(b.code, 0, showRun(b));
        assert.ok(b.logs.some((l) => l.msg === 'index stored'), showRun(b));
        const archive = join(store, 'agent-a', backup, (await committedBackups(join(store, 'agent-a', backup))).pop()!);
        const indexSize = fs.statSync(`${archive}.index.gz`).size;
        const into = await tmp.make('nbackup-it-ri-');
        const before = proxy.bytesServerToClient;
        const rel = `${big.replace(/^\//, '')}/part3`;
        const r = await runAgent(['restore', '--config', yaml, '--backup', backup, '--to', into, `${rel}/note.txt`, `${rel}/to-note`], T);
        assert.equal(r.code, 0, showRun(r));
        const m = /read through its index: ([12]) of (\d+) blocks/.exec(r.stderr);
        assert.ok(m, r.stderr);
        const [taken, blocks] = [Number(m[1]), Number(m[2])];
        assert.ok(BLOCKS[backup].includes(blocks), `${blocks} blocks in ${backup}`);
        const read = proxy.bytesServerToClient - before;
        // The list, the index, the one or two blocks that hold the files (plus framing) and TLS records.
        assert.ok(read < indexSize + taken * BLOCK[backup] + 0.2 * MiB, `${read} bytes read for ${taken} block(s) (index ${indexSize})`);
        const got = join(into, rel);
        assert.equal(fs.readFileSync(join(got, 'note.txt'), 'utf8'), 'note 3\n'.repeat(1000));
        assert.equal(fs.readlinkSync(join(got, 'to-note')), 'note.txt');
        assert.deepEqual(fs.readdirSync(got).sort(), ['note.txt', 'to-note']);
        const f = await runAgent(['find', '--config', yaml, '--backup', backup, '**/part3/note.txt'], T);
        assert.equal(f.code, 0, showRun(f));
        assert.match(f.stdout, new RegExp(`^${backup} {2}\\S+ \\S+ UTC {2}file {7} +7000 {2}\\S+Z {2}.*part3/note\\.txt$`, 'm'), f.stdout);
      }
      // A damaged index is not believed: the restore reads the whole archive instead, and says so.
      const archive = join(store, 'agent-a', 'bigg', (await committedBackups(join(store, 'agent-a', 'bigg'))).pop()!);
      const index = fs.readFileSync(`${archive}.index.gz`);
      fs.writeFileSync(`${archive}.index.gz`, index.subarray(0, index.length - 9));
      after(() => fs.writeFileSync(`${archive}.index.gz`, index));
      const into = await tmp.make('nbackup-it-ri-');
      const r = await runAgent(['restore', '--config', yaml, '--backup', 'bigg', '--to', into, '**/part1/note.txt'], T);
      assert.equal(r.code, 0, showRun(r));
      assert.match(r.stderr, /the index of \S+ cannot be used/);
      assert.match(r.stderr, /SHA-256 verified/);
      assert.equal(fs.readFileSync(join(into, big.replace(/^\//, ''), 'part1', 'note.txt'), 'utf8'), 'note 1\n'.repeat(1000));
      const none = await runAgent(['restore', '--config', yaml, '--backup', 'bigz', '--to', into, 'no/such/file'], T);
      assert.equal(none.code, 1, showRun(none));
      assert.match(none.stderr, /nothing in \S+ matches "no\/such\/file"/);
    } finally {
      await proxy.close();
    }
  });

  it('a full restore decompresses the blocks its index lays out in parallel; without a usable index, one stream; an index that lies stops it', async () => {
    // The archives of the test above, gzip and zstd.
    const big = join(work, 'big');
    const yaml = join(work, 'agent-a-big.yaml');
    await writeYaml(yaml, agentConfigObject(pki, 'agent-a', server!.port, [
      { name: 'bigz', storage: 'main', sources: [big] },
      { name: 'bigg', storage: 'main', sources: [big] },
    ]));
    const full = async (backup: string) => {
      const into = await tmp.make('nbackup-it-rf-');
      const r = await runAgent(['restore', '--config', yaml, '--backup', backup, '--to', into], T);
      return { r, into };
    };
    for (const backup of ['bigz', 'bigg']) {
      const { r, into } = await full(backup);
      assert.equal(r.code, 0, showRun(r));
      const m = /SHA-256 verified; its (\d+) blocks decompressed in parallel, as its index lays them out/.exec(r.stderr);
      assert.ok(m && BLOCKS[backup].includes(Number(m[1])), r.stderr);
      await assertTreesEqual(big, restoredPath(into, big));
    }
    const archive = join(store, 'agent-a', 'bigg', (await committedBackups(join(store, 'agent-a', 'bigg'))).pop()!);
    const indexFile = `${archive}.index.gz`;
    const index = fs.readFileSync(indexFile);
    after(() => fs.writeFileSync(indexFile, index));
    // No index (a backup from before indexes): one stream, still verified.
    fs.rmSync(indexFile);
    let { r, into } = await full('bigg');
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stderr, /SHA-256 verified\n/);
    assert.doesNotMatch(r.stderr, /in parallel/);
    await assertTreesEqual(big, restoredPath(into, big));
    // A damaged index (its header still readable, its blocks not): said so, then one stream.
    const lines = zlib.gunzipSync(index).toString('utf8').split('\n');
    const blocksLine = lines[1];
    lines[1] = '{"blocks":[1,2]}';
    fs.writeFileSync(indexFile, zlib.gzipSync(lines.join('\n')));
    ({ r, into } = await full('bigg'));
    assert.equal(r.code, 0, showRun(r));
    assert.match(r.stderr, /the index of \S+ cannot be used \(.*\); decompressing the archive as one stream/);
    await assertTreesEqual(big, restoredPath(into, big));
    // An index whose block sizes still add up but cut the archive in the wrong places: the restore stops.
    const blocks = (JSON.parse(blocksLine) as { blocks: number[] }).blocks;
    blocks[0] += 100;
    blocks[1] -= 100;
    lines[1] = JSON.stringify({ blocks });
    fs.writeFileSync(indexFile, zlib.gzipSync(lines.join('\n')));
    ({ r } = await full('bigg'));
    assert.notEqual(r.code, 0, showRun(r));
    assert.match(r.stderr, /block 0 of the archive does not decompress as its index says/);
    fs.writeFileSync(indexFile, index);
  });

  it("agent B can neither list nor read agent A's backups", async () => {
    const yamlB = join(work, 'agent-b.yaml');
    await writeYaml(yamlB, agentConfigObject(pki, 'agent-b', server!.port, [{ name: 'app', storage: 'main', sources: [tree.root] }]));
    const list = await runAgent(['list', '--config', yamlB], T);
    assert.equal(list.code, 0, showRun(list));
    assert.match(list.stdout, /no backups on the server for this agent/);
    const name = (await committedBackups(join(store, 'agent-a', 'app')))[0];
    const c = rawAgent(server!.port, pki, 'agent-b');
    await c.connected();
    c.write(encodeReadRequest({ agent: 'agent-a', storage: 'main', backup: 'app', name, target: ReadTarget.ARCHIVE, offset: 0, length: 0 }));
    const head = await c.read(decodeReadHead);
    assert.equal(head.status, ReadStatus.REJECT);
    assert.match(head.message, /may not read the backups of agent "agent-a"/);
    await c.waitClosed(5000);
    assert.equal(c.unread.length, 0, 'not one byte of the archive');
    const l = rawAgent(server!.port, pki, 'agent-b');
    await l.connected();
    l.write(encodeListRequest({ agent: 'agent-a', backup: '' }));
    assert.equal((await l.read(decodeListHead)).status, ReadStatus.REJECT);
    // A name that is not an archive's is refused before any path is built.
    const p = rawAgent(server!.port, pki, 'agent-a');
    await p.connected();
    p.write(encodeReadRequest({ agent: 'agent-a', storage: 'main', backup: 'app', name: '../../../etc/passwd', target: ReadTarget.ARCHIVE, offset: 0, length: 0 }));
    assert.equal((await p.read(decodeReadHead)).status, ReadStatus.REJECT);
  });

  it('IDXP stores an index beside its archive only for the agent that committed it, and only if it describes that archive', async () => {
    const r = await runAgent(['--config', yamlA, '--once', '--backup', 'zst'], T);
    assert.equal(r.code, 0, showRun(r));
    const done = r.logs.find((l) => l.msg === 'backup committed')!;
    const session = String(done.session);
    const name = (await committedBackups(join(store, 'agent-a', 'zst'))).pop()!;
    const file = join(store, 'agent-a', 'zst', name);
    const sha = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    const members = execFileSync('tar', ['--zstd', '-tf', file], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
    const index = (h: Record<string, unknown>) =>
      zlib.gzipSync(`${JSON.stringify({ nbackupIndex: 1, format: 'zstd', blockSize: MiB, tarSize: 1, archiveSize: fs.statSync(file).size, sha256: sha, members, blocks: 1, ...h })}\n`);
    const put = async (as: string, body: Buffer) => {
      const c = rawAgent(server!.port, pki, as);
      await c.connected();
      c.write(Buffer.concat([encodeIndexPut({ sessionId: session, length: body.length }), body]));
      return c.read(decodeIndexAck, 10_000);
    };
    assert.equal((await put('agent-b', index({}))).status, ReadStatus.NOT_FOUND, "another agent's session does not exist for it");
    // The agent stored a real index after its commit; it is taken away to try what IDXP accepts.
    assert.ok(r.logs.some((l) => l.msg === 'index stored'), showRun(r));
    const real = fs.readFileSync(`${file}.index.gz`);
    fs.rmSync(`${file}.index.gz`);
    const wrong = await put('agent-a', index({ sha256: '0'.repeat(64) }));
    assert.equal(wrong.status, ReadStatus.REJECT);
    assert.match(wrong.message, /describes another archive/);
    assert.equal(fs.existsSync(`${file}.index.gz`), false);
    assert.deepEqual((await put('agent-a', index({}))).status, ReadStatus.OK);
    assert.ok(fs.existsSync(`${file}.index.gz`));
    assert.deepEqual(fs.readdirSync(join(store, 'agent-a', 'zst')).filter((f) => f.endsWith('.tmp')), []);
    // The agent's own index goes back the same way.
    assert.equal((await put('agent-a', real)).status, ReadStatus.OK);
    assert.ok(fs.readFileSync(`${file}.index.gz`).equals(real));
    // Two uploads at once each write a temporary file of their own: one that goes wrong after the
    // other has put its index in place cannot write into that index.
    const zdir = join(store, 'agent-a', 'zst');
    const slow = rawAgent(server!.port, pki, 'agent-a');
    try {
      await slow.connected();
      slow.write(Buffer.concat([encodeIndexPut({ sessionId: session, length: real.length }), real.subarray(0, 100)]));
      const started = await pollUntil(async () => fs.readdirSync(zdir).some((f) => f.endsWith('.tmp') && fs.statSync(join(zdir, f)).size === 100), 5000);
      assert.ok(started, 'the slow upload has written its first 100 bytes');
      assert.equal((await put('agent-a', real)).status, ReadStatus.OK);
      slow.write(Buffer.alloc(real.length - 100, 0x5a));
      assert.equal((await slow.read(decodeIndexAck, 10_000)).status, ReadStatus.REJECT);
    } finally {
      slow.destroy();
    }
    assert.ok(fs.readFileSync(`${file}.index.gz`).equals(real), 'the index in place is the good one, whole');
    // The refused upload's temporary file goes right after its answer.
    const swept = await pollUntil(async () => !fs.readdirSync(zdir).some((f) => f.endsWith('.tmp')), 5000);
    assert.ok(swept, `temporary files left: ${fs.readdirSync(zdir).join(', ')}`);
    const list = await runAgent(['list', '--config', yamlA, '--backup', 'zst'], T);
    assert.match(list.stdout, new RegExp(`^  \\S+ \\S+ UTC +\\S+ +\\S+ +42 +zstd +main +${sha.slice(0, 16)}$`.replace('42', String(members)), 'm'), list.stdout);
  });

  it('a hostile archive writes nothing outside the target folder and says why', async () => {
    const dir = join(store, 'agent-a', 'hostile');
    fs.mkdirSync(dir, { recursive: true });
    const archive = join(dir, '2026-01-01T00-00-00-000.tar.gz');
    const outside = await tmp.make('nbackup-it-outside-');
    // Members: ../escape, an absolute path, a symlink out of the folder then a file through it,
    // a hard link to a file outside, and one harmless file.
    const py = `
import io, sys, tarfile
t = tarfile.open(sys.argv[1], 'w:gz', format=tarfile.PAX_FORMAT)
def add(name, data=b'pwned', **kw):
    i = tarfile.TarInfo(name); i.size = len(data)
    for k, v in kw.items(): setattr(i, k, v)
    t.addfile(i, io.BytesIO(data) if i.isreg() else None)
add('../escape')
add(sys.argv[2] + '/abs')
add('link', type=tarfile.SYMTYPE, linkname=sys.argv[2], size=0)
add('link/through')
add('hard', type=tarfile.LNKTYPE, linkname='../../etc/passwd', size=0)
add('fine.txt', b'ok')
t.close()`;
    execFileSync('python3', ['-c', py, archive, outside]);
    const sha = crypto.createHash('sha256').update(fs.readFileSync(archive)).digest('hex');
    fs.writeFileSync(`${archive}.sha256`, `${sha}  2026-01-01T00-00-00-000.tar.gz\n`);
    const into = join(await tmp.make('nbackup-it-r5-'), 'target');
    const r = await runAgent(['restore', '--config', yamlA, '--backup', 'hostile', '--to', into], T);
    assert.equal(r.code, 1, showRun(r));
    assert.match(r.stderr, /\.\.\/escape: refused: it has a "\.\." component/);
    assert.match(r.stderr, /\/abs: refused: it has an absolute name/);
    assert.match(r.stderr, /link\/through: refused: link is a symlink; nothing is written through it/);
    assert.match(r.stderr, /hard: refused: its link target \.\.\/\.\.\/etc\/passwd has a "\.\." component/);
    assert.match(r.stderr, /4 members NOT restored/);
    assert.deepEqual(fs.readdirSync(outside), [], 'nothing written outside');
    assert.equal(fs.existsSync(join(into, '..', 'escape')), false);
    assert.deepEqual(fs.readdirSync(into).sort(), ['fine.txt', 'link']);
    assert.equal(fs.readFileSync(join(into, 'fine.txt'), 'utf8'), 'ok');
    // An archive without an index is searched through its tar headers.
    const f = await runAgent(['find', '--config', yamlA, '--backup', 'hostile', 'fine.*'], T);
    assert.equal(f.code, 0, showRun(f));
    assert.match(f.stdout, /^hostile {2}2026-01-01 00:00:00\.000 UTC {2}file {7} +2 {2}\S+Z {2}fine\.txt$/m);
  });

  it('nbackup-server verify passes clean archives and reports a flipped byte, exiting 1', async () => {
    const clean = await runAgent(['verify', '--config', serverYaml], { ...T, script: SERVER_BIN });
    assert.equal(clean.code, 0, showRun(clean));
    const total = clean.stdout.trim().split('\n');
    assert.equal(total[total.length - 1], `${total.length - 1} archives verified, 0 bad`);
    assert.ok(total.length - 1 >= 4, clean.stdout);
    assert.match(clean.stdout, /^OK {3}\S+\.tar\.zst {2}\S+ {2}\d+ members {2}SHA-256 matches, index matches$/m);
    const victim = join(store, 'agent-a', 'app', (await committedBackups(join(store, 'agent-a', 'app')))[0]);
    flipMiddleByte(victim, 0x01);
    const r = await runAgent(['verify', '--config', serverYaml, '--agent', 'agent-a'], { ...T, script: SERVER_BIN });
    assert.equal(r.code, 1, showRun(r));
    const bad = r.stdout.split('\n').filter((l) => l.startsWith('BAD'));
    assert.equal(bad.length, 1, r.stdout);
    assert.ok(bad[0].startsWith(`BAD  ${victim}  `), bad[0]);
    assert.match(bad[0], /SHA-256 \w+ differs|not a valid compressed tar/);
    assert.match(r.stdout, new RegExp(`${total.length - 1} archives verified, 1 bad`));
    // An index that puts a member where it is not is bad too.
    const zst = join(store, 'agent-a', 'zst', (await committedBackups(join(store, 'agent-a', 'zst'))).pop()!);
    const lines = zlib.gunzipSync(fs.readFileSync(`${zst}.index.gz`)).toString('utf8').split('\n');
    lines[3] = lines[3].replace(/^\[(\d+),/, (_, o: string) => `[${Number(o) + 512},`);
    fs.writeFileSync(`${zst}.index.gz`, zlib.gzipSync(lines.join('\n')));
    const z = await runAgent(['verify', '--config', serverYaml, '--agent', 'agent-a'], { ...T, script: SERVER_BIN });
    assert.equal(z.code, 1, showRun(z));
    assert.match(z.stdout, /^BAD {2}\S+\.tar\.zst {2}.*its index puts member 2 at tar offset \d+, the archive has it at \d+$/m);
  });
});

/**
 * Shared set-up for the integration tests: a workspace with its PKI, source trees, config writers
 * for the real CLIs, a started server with its store, restore-and-compare with GNU tar, store
 * listings, and reading an agent's result. The raw NBKP client is in raw-client.ts.
 *
 * Not a test file itself (it has no tests); `node --test` may still load it, harmlessly.
 */
import assert from 'node:assert/strict';
import { closeSync, fstatSync, mkdirSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { assertTreesEqual } from '../helpers/compare.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { startServer, writeYaml, type AgentResult, type LogLine, type ServerHandle } from '../helpers/proc.js';
import { gnuTarExtract, gzipTest } from '../helpers/tar.js';
import type { TempDirs } from '../helpers/tmp.js';
import { makeTree, randomBytesSeeded, type TreeInfo } from '../helpers/tree.js';
import { waitUntilAsync } from '../helpers/wait.js';
import { HOST } from './raw-client.js';

// ─── workspace, PKI, source ────────────────────────────────────────────────────────────────

/** A fresh temporary directory (kept in `tmp` for cleanup) holding a test PKI for `agents`. */
export async function makeWorkspace(tmp: TempDirs, prefix: string, agents: string[]): Promise<{ work: string; pki: Pki }> {
  const work = await tmp.make(prefix);
  const pki = await makePki(join(work, 'pki'), { agents });
  return { work, pki };
}

/**
 * The shared test tree at `root`, plus `bulk.files` incompressible files of `bulk.size` bytes in
 * root/bulk (seeds bulk.seed, bulk.seed + 1, …), so a stream is long enough to cut.
 */
/**
 * The daemon suites' sources under `work`: `small` (two files, a backup of an instant) and `big`
 * (6 MiB incompressible: about 6 s through a 1 MiB/s proxy).
 */
export function makeDaemonSources(work: string): { small: string; big: string } {
  const small = join(work, 'small');
  mkdirSync(small);
  writeFileSync(join(small, 'a.txt'), 'hello\n');
  writeFileSync(join(small, 'b.bin'), randomBytesSeeded(64 * 1024, 91));
  const big = join(work, 'big');
  mkdirSync(big);
  for (let i = 0; i < 3; i++) writeFileSync(join(big, `r${i}.bin`), randomBytesSeeded(2 * 1024 * 1024, 92 + i));
  return { small, big };
}

export async function makeSource(root: string, bulk?: { files: number; size: number; seed: number }): Promise<TreeInfo> {
  const tree = await makeTree(root);
  if (bulk) {
    mkdirSync(join(root, 'bulk'));
    for (let i = 0; i < bulk.files; i++) writeFileSync(join(root, 'bulk', `r${i}.bin`), randomBytesSeeded(bulk.size, bulk.seed + i));
  }
  return tree;
}

// ─── configs ───────────────────────────────────────────────────────────────────────────────

export interface StorageSpec {
  base_dir: string;
  max_backups?: number;
  min_free?: string | number;
}

/** A server.yaml as a plain object, listening on 127.0.0.1:0 with a 2 s handshake timeout. */
export function serverConfigObject(
  pki: Pki,
  storages: Record<string, StorageSpec>,
  server: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    server: { listen: `${HOST}:0`, handshake_timeout: '2s', idle_timeout: '10s', ...server },
    tls: { ca_cert: pki.caCert, server_cert: pki.serverCert, server_key: pki.serverKey },
    storages: Object.fromEntries(
      Object.entries(storages).map(([name, s]) => [name, { max_backups: 5, min_free: 0, ...s }]),
    ),
    logging: { level: 'info', format: 'json' },
  };
}

export async function writeServerConfig(
  path: string,
  pki: Pki,
  storages: Record<string, StorageSpec>,
  server: Record<string, unknown> = {},
): Promise<void> {
  await writeYaml(path, serverConfigObject(pki, storages, server));
}

export interface EntrySpec {
  name: string;
  storage: string;
  sources: string[];
  exclude?: string[];
}

/** An agent.yaml as a plain object (tests may tweak it before writing). */
export function agentConfigObject(
  pki: Pki,
  agentName: string,
  port: number,
  entries: EntrySpec[],
  opts: { certOf?: string } = {},
): Record<string, unknown> {
  const pair = pki.agents[opts.certOf ?? agentName];
  if (!pair) throw new Error(`no certificate for ${opts.certOf ?? agentName}`);
  return {
    agent: { name: agentName },
    server: { address: `${HOST}:${port}` },
    tls: { ca_cert: pki.caCert, client_cert: pair.cert, client_key: pair.key },
    backups: entries.map((e) => ({
      name: e.name,
      storage: e.storage,
      schedule: '0 2 * * *',
      sources: e.sources.map((path) => ({ path })),
      exclude: e.exclude ?? [],
    })),
    retry: { max_attempts: 1, connect_timeout: '5s', read_timeout: '15s' },
    resume: { buffer_size: '16mb', chunk_size: '1mb' },
    logging: { level: 'info', format: 'json' },
    daemon: { control_channel: { enabled: false } },
  };
}

export async function writeAgentConfig(
  path: string,
  pki: Pki,
  agentName: string,
  port: number,
  entries: EntrySpec[],
  opts: { certOf?: string } = {},
): Promise<void> {
  await writeYaml(path, agentConfigObject(pki, agentName, port, entries, opts));
}

/**
 * dir/agent.yaml for agent-a with one entry "app" (storage "main") backing up `tree` with its
 * excludes; `top` is merged into the config, `entry` into the entry. Returns the path.
 */
export async function writeAppAgentYaml(
  dir: string,
  pki: Pki,
  port: number,
  tree: TreeInfo,
  top: Record<string, unknown> = {},
  entry: Record<string, unknown> = {},
): Promise<string> {
  const cfg = agentConfigObject(pki, 'agent-a', port, [{ name: 'app', storage: 'main', sources: [tree.root], exclude: tree.excludes }]);
  Object.assign((cfg.backups as Record<string, unknown>[])[0], entry);
  Object.assign(cfg, top);
  const file = join(dir, 'agent.yaml');
  await writeYaml(file, cfg);
  return file;
}

// ─── a server with its store ───────────────────────────────────────────────────────────────

export interface Env {
  /** The test's own temporary directory. */
  dir: string;
  /** The base_dir of storage "main". */
  store: string;
  server: ServerHandle;
}

/**
 * A fresh directory `<prefix>…` with a server.yaml for one storage "main" (dir/store, max_backups
 * 3, plus `storage`) and `server` settings, and that server started.
 */
export async function startEnv(
  tmp: TempDirs,
  pki: Pki,
  prefix: string,
  opts: { storage?: Record<string, unknown>; server?: Record<string, unknown> } = {},
): Promise<Env> {
  const dir = await tmp.make(prefix);
  const store = join(dir, 'store');
  const main = { base_dir: store, max_backups: 3, ...opts.storage } as StorageSpec;
  await writeServerConfig(join(dir, 'server.yaml'), pki, { main }, opts.server ?? {});
  const server = await startServer(join(dir, 'server.yaml'));
  return { dir, store, server };
}

// ─── the store ─────────────────────────────────────────────────────────────────────────────

/** Every file under `dir` (relative paths), recursively; [] if `dir` does not exist. */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (abs: string, rel: string): Promise<void> => {
    let ents;
    try {
      ents = await readdir(abs, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of ents) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await visit(join(abs, e.name), r);
      else out.push(r);
    }
  };
  await visit(dir, '');
  return out.sort();
}

/** Temporary files (`*.tmp`, staging files included) under `dir`, as relative paths. */
export async function tmpFiles(dir: string): Promise<string[]> {
  return (await listFilesRecursive(dir)).filter((f) => f.endsWith('.tmp'));
}

/**
 * Resolves once the temporary file of session `sessionId` in `dir` (the backup's folder) holds at
 * least `bytes` bytes, i.e. the server has received and written them; rejects after timeoutMs.
 */
export async function waitForTempBytes(dir: string, sessionId: string, bytes: number, timeoutMs = 5000): Promise<void> {
  let size = 0;
  await waitUntilAsync(
    async () => {
      const name = (await tmpFiles(dir)).find((f) => f.includes(sessionId) && /\.tar\.(gz|zst)\.tmp$/.test(f));
      size = name ? await stat(join(dir, name)).then((st) => st.size, () => 0) : 0;
      return size >= bytes;
    },
    timeoutMs,
    `${bytes} bytes in the temporary file of session ${sessionId}`,
    async () => `it holds ${size}; files in ${dir}: ${JSON.stringify(await listFilesRecursive(dir))}`,
  );
}

/** Committed backups (`<timestamp>.tar.gz` or `.tar.zst`) in a directory, sorted by name (= by time). */
export async function committedBackups(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.filter((n) => /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}\.tar\.(gz|zst)$/.test(n)).sort();
}

// ─── restore and compare ───────────────────────────────────────────────────────────────────

export interface TarTimeouts {
  /** Bound for gzip -t and for GNU tar (default: the helpers' own, 120 s). */
  timeoutMs?: number;
}

/** gzip -t (zstd -t) `archive`, then extract it with GNU tar into `into` (absolute member names land below it). */
export async function restoreArchive(archive: string, into: string, o: TarTimeouts = {}): Promise<void> {
  await gzipTest(archive, { timeoutMs: o.timeoutMs });
  await gnuTarExtract(archive, into, { timeoutMs: o.timeoutMs });
}

/** Where a source path lands in a restore into `into` (member names are the path less its "/"). */
export function restoredPath(into: string, source: string): string {
  return join(into, source.replace(/^\/+/, ''));
}

/** restoreArchive, then the restore must equal `tree` less its excluded paths, hard links kept. */
export async function restoreAndCompare(archive: string, tree: TreeInfo, into: string, o: TarTimeouts = {}): Promise<void> {
  await restoreArchive(archive, into, o);
  await assertTreesEqual(tree.root, restoredPath(into, tree.root), { excludedPaths: tree.excludedPaths, hardLinkGroups: tree.hardLinkGroups });
}

/**
 * The store of `env` holds exactly one committed backup of agent-a/app; it restores `tree` exactly
 * (into env.dir/restore) and no temporary or staging file is left. With `onlyFile`, the store must
 * hold nothing else at all.
 */
export async function restoreTheBackup(env: Env, tree: TreeInfo, o: { onlyFile?: boolean } = {}): Promise<{ file: string; size: number }> {
  const backupDir = join(env.store, 'agent-a', 'app');
  const files = (await committedBackups(backupDir)).map((f) => join(backupDir, f));
  assert.equal(files.length, 1, `exactly one committed backup, got ${files.join(', ')}`);
  await restoreAndCompare(files[0], tree, join(env.dir, 'restore'));
  const all = await listFilesRecursive(env.store);
  assert.deepEqual(
    all.filter((f) => f.endsWith('.tmp') || f.includes('staging')),
    [],
    'no temporary or staging file left',
  );
  const name = `agent-a/app/${files[0].slice(backupDir.length + 1)}`;
  if (o.onlyFile) assert.deepEqual(all.sort(), [name, `${name}.index.gz`, `${name}.sha256`], 'nothing but the committed file, its index and its SHA-256');
  return { file: files[0], size: statSync(files[0]).size };
}

// ─── an agent's result ─────────────────────────────────────────────────────────────────────

/** An agent (or CLI) run for an assertion message: status, then the last 200 lines of its output. */
export function showRun(r: AgentResult): string {
  const tail = (s: string) => s.split('\n').slice(-200).join('\n');
  return `exit ${r.code} signal ${r.signal} timedOut ${r.timedOut} after ${r.durationMs} ms\n--- stdout ---\n${tail(r.stdout)}\n--- stderr ---\n${tail(r.stderr)}`;
}

/** The log lines whose msg is `msg`. */
export function logsWith(logs: LogLine[], msg: string): LogLine[] {
  return logs.filter((l) => l.msg === msg);
}

/** The one log line whose msg is `msg`; `context` goes into the assertion message. */
export function oneLog(logs: LogLine[], msg: string, context: string): LogLine {
  const found = logsWith(logs, msg);
  assert.equal(found.length, 1, `expected exactly one "${msg}" log line, got ${found.length}; ${context}`);
  return found[0];
}

// ─── the server's state ────────────────────────────────────────────────────────────────────

/** The last `lines` lines the server printed, for an assertion message. */
export function serverTail(server: ServerHandle, lines = 80): string {
  return `--- server output (last ${lines} lines) ---\n${server.output().slice(-lines).join('\n')}`;
}

/** The server never hit an internal error (cmd/ logs unhandled rejections and serves on) and still runs. */
export function assertNoInternalError(server: ServerHandle): void {
  const bad = server.logs().filter((l) => typeof l.msg === 'string' && l.msg.startsWith('internal error'));
  assert.deepEqual(bad, [], `the server logged internal errors\n${serverTail(server, 30)}`);
  assert.equal(server.proc.exitCode, null, `the server is still running\n${serverTail(server, 30)}`);
}

/** Flips bits `mask` of the byte in the middle of `file` (a damaged archive for verify). */
export function flipMiddleByte(file: string, mask: number): void {
  const fd = openSync(file, 'r+');
  try {
    const at = Math.floor(fstatSync(fd).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] ^= mask;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

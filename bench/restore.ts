/**
 * `npm run bench -- --restore`: restoring what one backup of the folders made, against the
 * reference in the same run:
 *
 *   ssh 127.0.0.1 cat ARCHIVE | tar -xzf - -C DIR        the reference full restore (private sshd)
 *   nbackup-agent restore --backup bench --to DIR         the full restore over mTLS
 *   nbackup-agent restore --backup bench --to DIR FILE    one small file, through a counting proxy
 *
 * The full restore is checked with `tar -dzf ARCHIVE -C DIR` (GNU tar compares every member's
 * contents, mode, mtime and links), the single file with cmp against its source.
 */
import { createReadStream } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readIndex, type IndexMember } from '../src/archive/index-format.js';
import { startCountingProxy } from './count-proxy.js';
import { AGENT_NAME, agentConfig, findBackups, serverConfig, writeYaml } from './nbackup-run.js';
import { startServer, type ServerHandle } from './nbackup-server.js';
import { AGENT_BIN, REPO_ROOT } from './paths.js';
import type { BenchPki } from './pki.js';
import type { ReferenceSetup } from './reference.js';
import { Fatal, STEP_TIMEOUT_MS, fmtBytes, fmtSeconds, log, median, ratio, run, shq, table } from './util.js';

export interface RestoreBenchInput {
  root: string;
  dirs: string[];
  runs: number;
  pki: BenchPki;
  tar: string;
  ref: ReferenceSetup | null;
  onServer: (s: ServerHandle | null) => void;
}

interface RestoreRun {
  run: number;
  referenceSeconds: number | null;
  fullSeconds: number;
  fullCheck: boolean;
  singleSeconds: number;
  singleBytesRead: number;
  singleConnections: number;
}

async function timed(command: string, args: string[], what: string): Promise<number> {
  const r = await run(command, args, { timeoutMs: STEP_TIMEOUT_MS, maxOutput: 1 << 20 });
  if (r.code !== 0) throw new Fatal(`${what} failed (exit ${r.code ?? r.signal}):\n${r.stderr.split('\n').slice(-20).join('\n')}`);
  return r.seconds;
}

/** A regular file of 1–64 KiB near the middle of the tar, whose name needs no glob escaping. */
async function pickSmallFile(indexFile: string): Promise<{ member: IndexMember; tarSize: number; blocks: number }> {
  const idx = await readIndex(createReadStream(indexFile));
  const middle = idx.header.tarSize / 2;
  let best: IndexMember | null = null;
  for await (const m of idx.members) {
    if (m.type !== 'file' || m.size < 1024 || m.size > 65536 || !/^[A-Za-z0-9._/-]+$/.test(m.name.toString('latin1'))) continue;
    if (!best || Math.abs(m.offset - middle) < Math.abs(best.offset - middle)) best = m;
  }
  if (!best) throw new Fatal('no small regular file with a plain name in the index');
  return { member: best, tarSize: idx.header.tarSize, blocks: idx.blocks.length };
}

/** Dirty pages written out before a timed step, so that none pays for the one before. */
async function settle(): Promise<void> {
  await run('sync', [], { timeoutMs: STEP_TIMEOUT_MS });
}

export async function restoreBench(b: RestoreBenchInput): Promise<number> {
  const storage = join(b.root, 'restore-storage');
  await mkdir(storage, { recursive: true });
  const serverYaml = join(b.root, 'restore-server.yaml');
  await writeYaml(serverYaml, serverConfig(b.pki, storage));
  const server = await startServer(serverYaml, 30_000);
  b.onServer(server);
  try {
    const agentYaml = join(b.root, 'restore-agent.yaml');
    await writeYaml(agentYaml, agentConfig(b.pki, server.port, b.dirs, { format: 'gzip', parallels: 0 }));
    log('restore bench: one backup of the folders (gzip, single stream)...');
    await timed(process.execPath, [AGENT_BIN, '--config', agentYaml, '--once'], 'the backup');
    const [archive] = await findBackups(storage);
    if (!archive) throw new Fatal('the backup committed no archive');
    const archiveSize = (await stat(archive)).size;
    const indexSize = (await stat(`${archive}.index.gz`).catch(() => null))?.size;
    if (indexSize === undefined) throw new Fatal('the backup stored no index');
    const pick = await pickSmallFile(`${archive}.index.gz`);
    const name = pick.member.name.toString('latin1');
    log(`restore bench: archive ${fmtBytes(archiveSize)}, index ${fmtBytes(indexSize)}, ${pick.blocks} blocks; the single file is /${name} (${pick.member.size} bytes)`);

    const proxy = await startCountingProxy({ host: '127.0.0.1', port: server.port });
    const proxyYaml = join(b.root, 'restore-agent-proxy.yaml');
    await writeYaml(proxyYaml, agentConfig(b.pki, proxy.port, b.dirs, { format: 'gzip', parallels: 0 }));
    const runs: RestoreRun[] = [];
    // Restored trees are removed at the end: a large delete just before a timed run slows its file creation.
    const restored: string[] = [];
    try {
      for (let i = 1; i <= b.runs; i++) {
        const refDir = join(b.root, `restore-ref-${i}`);
        const nbDir = join(b.root, `restore-nb-${i}`);
        await mkdir(refDir, { recursive: true });
        const reference = async (): Promise<number | null> => {
          if (!b.ref) return null;
          const ssh = [b.ref.ssh, ...b.ref.sshd.sshArgs].map(shq).join(' ');
          await settle();
          return timed('bash', ['-o', 'pipefail', '-c', `${ssh} ${shq(`cat ${shq(archive)}`)} | ${shq(b.tar)} -xzf - -C ${shq(refDir)}`], 'the reference restore');
        };
        const full = async (): Promise<number> => {
          await settle();
          return timed(process.execPath, [AGENT_BIN, 'restore', '--config', agentYaml, '--backup', 'bench', '--to', nbDir], 'nbackup-agent restore');
        };
        log(`run ${i}/${b.runs}: full restores (${i % 2 === 1 ? 'reference first' : 'nbackup first'})...`);
        let referenceSeconds: number | null;
        let fullSeconds: number;
        if (i % 2 === 1) {
          referenceSeconds = await reference();
          fullSeconds = await full();
        } else {
          fullSeconds = await full();
          referenceSeconds = await reference();
        }
        const check = await run(b.tar, ['-dzf', archive, '-C', nbDir], { timeoutMs: STEP_TIMEOUT_MS });
        if (check.code !== 0) log(`ERROR: tar -d finds differences:\n${check.stdout.split('\n').slice(0, 20).join('\n')}${check.stderr.slice(-2000)}`);
        restored.push(refDir, nbDir);

        const oneDir = join(b.root, `restore-one-${i}`);
        await settle();
        const before = { down: proxy.down, connections: proxy.connections };
        const singleSeconds = await timed(process.execPath, [AGENT_BIN, 'restore', '--config', proxyYaml, '--backup', 'bench', '--to', oneDir, name], 'single-file restore');
        const same = await run('cmp', [`/${name}`, join(oneDir, name)], { timeoutMs: 60_000 });
        if (same.code !== 0) throw new Fatal(`the restored /${name} differs from its source: ${same.stdout}${same.stderr}`);
        restored.push(oneDir);
        const r: RestoreRun = {
          run: i,
          referenceSeconds,
          fullSeconds,
          fullCheck: check.code === 0,
          singleSeconds,
          singleBytesRead: proxy.down - before.down,
          singleConnections: proxy.connections - before.connections,
        };
        runs.push(r);
        log(
          `run ${i}/${b.runs}: reference ${fmtSeconds(referenceSeconds)}, nbackup ${fmtSeconds(fullSeconds)} (tar -d ${r.fullCheck ? 'OK' : 'FAILED'}); ` +
            `one file ${fmtSeconds(singleSeconds)}, ${fmtBytes(r.singleBytesRead)} read over ${r.singleConnections} connections`,
        );
      }
    } finally {
      await proxy.close();
      for (const dir of restored) await rm(dir, { recursive: true, force: true });
    }
    const ref = median(runs.map((r) => r.referenceSeconds));
    const full = median(runs.map((r) => r.fullSeconds))!;
    const summary = {
      archive: { bytes: archiveSize, indexBytes: indexSize, blocks: pick.blocks, tarBytes: pick.tarSize },
      singleFile: { name: `/${name}`, size: pick.member.size },
      medians: {
        referenceSeconds: ref,
        fullSeconds: full,
        fullVsReference: ratio(full, ref),
        singleSeconds: median(runs.map((r) => r.singleSeconds)),
        singleBytesRead: median(runs.map((r) => r.singleBytesRead)),
      },
      runs,
    };
    process.stdout.write(
      `\nRestore of one backup of ${b.dirs.join(' + ')} (${fmtBytes(pick.tarSize)} tar, ${fmtBytes(archiveSize)} .tar.gz, index ${fmtBytes(indexSize)})\n` +
        table(
          ['run', 'ssh cat | tar xzf', 'nbackup restore', 'ratio', 'tar -d', 'one file', 'bytes read', 'connections'],
          runs.map((r) => [
            String(r.run),
            fmtSeconds(r.referenceSeconds),
            fmtSeconds(r.fullSeconds),
            ratio(r.fullSeconds, r.referenceSeconds)?.toFixed(2) ?? '-',
            r.fullCheck ? 'OK' : 'FAILED',
            fmtSeconds(r.singleSeconds),
            fmtBytes(r.singleBytesRead),
            String(r.singleConnections),
          ]),
        ) +
        `\nmedian: full restore ${fmtSeconds(full)} vs reference ${fmtSeconds(ref)} (${ratio(full, ref)?.toFixed(2) ?? '-'}×); ` +
        `one file (/${name}) ${fmtSeconds(summary.medians.singleSeconds)}, ${fmtBytes(summary.medians.singleBytesRead)} read\n`,
    );
    const out = join(REPO_ROOT, 'bench', 'results', 'restore-latest.json');
    await writeFile(out, JSON.stringify(summary, null, 2) + '\n');
    log(`written to ${out}`);
    return runs.every((r) => r.fullCheck) ? 0 : 1;
  } finally {
    await server.stop(5000).catch(() => undefined);
    b.onServer(null);
  }
}

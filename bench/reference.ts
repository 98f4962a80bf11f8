/**
 * The input side and the reference pipeline:
 *
 *   du -sb DIRS                                   the input's size on disk
 *   tar -cf - DIRS > (counted)                    the warm-up: afterwards both sides read from the page cache
 *   tar -cf - DIRS | pigz -1 -p<cpus> | ssh 127.0.0.1 'cat > FILE'   the reference run, to a private sshd
 *   tar -cf - DIRS | zstd -3 -T0 | ssh 127.0.0.1 'cat > FILE'          the zstd reference (with --format zstd)
 */
import { spawn } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startPrivateSshd, type PrivateSshd } from './sshd.js';
import { Fatal, STEP_TIMEOUT_MS, findExecutable, log, run, shq, track } from './util.js';

export async function duBytes(dirs: string[]): Promise<{ total: number; perDir: Record<string, number> }> {
  const r = await run('du', ['-sb', ...dirs], { timeoutMs: STEP_TIMEOUT_MS });
  if (r.code !== 0) log(`warning: du -sb exited with ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const perDir: Record<string, number> = {};
  let total = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+)\t(.*)$/.exec(line);
    if (!m) continue;
    perDir[m[2]] = Number(m[1]);
    total += Number(m[1]);
  }
  return { total, perDir };
}

/** tar's stderr without blank lines and its "Removing leading `/'" notices. */
function tarNoise(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !/Removing leading/.test(l));
}

/** Reads all data once (`tar -cf - DIRS`, output counted and discarded) so both sides read from the page cache. */
export function warmCache(tar: string, dirs: string[]): Promise<{ tarBytes: number; seconds: number }> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(tar, ['-cf', '-', ...dirs], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (bytes += c.length));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-8192)));
    child.once('error', reject);
    child.once('close', (code) => {
      const noise = tarNoise(stderr);
      if (code !== 0) reject(new Fatal(`warm-up tar exited with ${code}:\n${noise.slice(-20).join('\n')}`));
      else {
        if (noise.length > 0) log(`warm-up tar warnings:\n${noise.slice(-10).join('\n')}`);
        resolvePromise({ tarBytes: bytes, seconds: (performance.now() - started) / 1000 });
      }
    });
  });
}

/** The reference's programs besides tar. */
interface ReferenceTools {
  pigz: string;
  sshd: string;
  ssh: string;
  sshKeygen: string;
}

/**
 * Looks the reference's programs up: each one's path (null when not found), all four when none is
 * missing, and the names of the missing ones.
 */
export function findReferenceTools(): {
  found: { [K in keyof ReferenceTools]: string | null };
  tools: ReferenceTools | null;
  missing: string[];
} {
  const pigz = findExecutable('pigz');
  const sshd = findExecutable('sshd', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
  const ssh = findExecutable('ssh');
  const sshKeygen = findExecutable('ssh-keygen');
  const missing = [
    ['pigz', pigz],
    ['sshd', sshd],
    ['ssh', ssh],
    ['ssh-keygen', sshKeygen],
  ]
    .filter(([, p]) => !p)
    .map(([n]) => n as string);
  const tools = pigz && sshd && ssh && sshKeygen ? { pigz, sshd, ssh, sshKeygen } : null;
  return { found: { pigz, sshd, ssh, sshKeygen }, tools, missing };
}

export interface ReferenceSetup {
  sshd: PrivateSshd;
  tar: string;
  pigz: string;
  /** null when zstd is not installed: the zstd reference is skipped. */
  zstd: string | null;
  ssh: string;
  cpus: number;
  outDir: string;
}

/**
 * Starts the private sshd in `root`/ssh (handed to onSshd at once, for the cleanup) and makes the
 * output folder `root`/reference.
 */
export async function setUpReference(
  root: string,
  tar: string,
  tools: ReferenceTools,
  cpus: number,
  onSshd: (sshd: PrivateSshd) => void,
): Promise<ReferenceSetup> {
  const sshd = await startPrivateSshd(join(root, 'ssh'), { sshd: tools.sshd, ssh: tools.ssh, sshKeygen: tools.sshKeygen });
  onSshd(sshd);
  const outDir = join(root, 'reference');
  await mkdir(outDir, { recursive: true });
  return { sshd, tar, pigz: tools.pigz, zstd: findExecutable('zstd'), ssh: tools.ssh, cpus, outDir };
}

export interface ReferenceRun {
  seconds: number;
  outputBytes: number;
  command: string;
}

/** The reference pipelines: `pigz` (tar | pigz -1 | ssh) and `zstd` (tar | zstd -3 -T0 | ssh). */
export type ReferenceKind = 'pigz' | 'zstd';

export async function runReference(ref: ReferenceSetup, kind: ReferenceKind, dirs: string[], runNo: number, keep: boolean): Promise<ReferenceRun> {
  const out = join(ref.outDir, `reference-run${runNo}.tar.${kind === 'pigz' ? 'gz' : 'zst'}`);
  const remote = `cat > ${shq(out)}`;
  if (kind === 'zstd' && !ref.zstd) throw new Fatal('zstd is not installed');
  const compressor = kind === 'pigz' ? `${shq(ref.pigz)} -1 -p${ref.cpus}` : `${shq(ref.zstd!)} -q -3 -T0`;
  const command =
    `${shq(ref.tar)} -cf - ${dirs.map(shq).join(' ')}` +
    ` | ${compressor}` +
    ` | ${[ref.ssh, ...ref.sshd.sshArgs].map(shq).join(' ')} ${shq(remote)}`;
  const r = await run('bash', ['-o', 'pipefail', '-c', command], { group: true, timeoutMs: STEP_TIMEOUT_MS });
  if (r.code !== 0) {
    throw new Fatal(`reference pipeline failed (exit ${r.code ?? r.signal}):\n${command}\n${tarNoise(r.stderr).slice(-20).join('\n')}`);
  }
  const outputBytes = (await stat(out)).size;
  if (!keep) await rm(out, { force: true });
  return { seconds: r.seconds, outputBytes, command };
}

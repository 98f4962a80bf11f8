/**
 * Benchmark: nbackup (agent → server over TLS 1.3 mTLS on loopback) against the reference pipeline
 *
 *   tar -cf - DIRS | pigz -1 -p<cpus> | ssh 127.0.0.1 'cat > FILE'
 *   tar -cf - DIRS | zstd -3 -T0 | ssh 127.0.0.1 'cat > FILE'        (with --format …zstd)
 *
 * in the same run, on the same (page-cached) data. Run with `npm run bench [-- options]`:
 *
 *   --dir PATH       a folder to back up (repeatable; default /usr/share and /usr/lib/x86_64-linux-gnu)
 *   --runs N         repetitions (default 1); with N > 1 the medians are reported
 *   --parallels LIST the agent's backup entry `parallels`, one nbackup run per value in each
 *                    repetition, e.g. `--parallels 0,4` (default 0 = single stream; parallel runs
 *                    use all N streams from the start: auto_scaler off)
 *   --format LIST    archive formats, gzip and/or zstd (default gzip), each at its default level
 *   --small-files N  back up N generated 1-4 KiB files instead of the folders
 *   --restore        measure restores of one backup instead (restore.ts)
 *   --keep           keep the temporary folder (configs, keys, outputs)
 *
 * The reference needs pigz, sshd and ssh; when one is missing it is skipped with a notice. It uses a
 * private sshd (own keys and config in the temporary folder, a free loopback port).
 * The summary is printed and written to bench/results/latest.json.
 *
 * This file: the order of the steps, and the cleanup on every exit path. The steps are in
 * options.ts, reference.ts (input, warm-up, reference run), nbackup-run.ts (with pki.ts and
 * nbackup-server.ts) and report.ts.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NAME, modeLabel, runNbackup, type Mode, type NbackupRun, type NbackupSetup } from './nbackup-run.js';
import type { ServerHandle } from './nbackup-server.js';
import { USAGE, UsageError, parseOptions, type Options } from './options.js';
import { makeBenchPki } from './pki.js';
import { duBytes, findReferenceTools, runReference, setUpReference, warmCache, type ReferenceKind, type ReferenceRun, type ReferenceSetup } from './reference.js';
import { makeSmallFiles } from './small-files.js';
import { restoreBench } from './restore.js';
import { report, type RunRecord } from './report.js';
import type { PrivateSshd } from './sshd.js';
import { Fatal, findExecutable, fmtBytes, fmtMiB, fmtSeconds, killAllSync, log, toolVersion } from './util.js';

// ---------------------------------------------------------------------------------------------
// Cleanup on every exit path

const state: {
  tempRoot: string | null;
  keep: boolean;
  sshd: PrivateSshd | null;
  server: ServerHandle | null;
  /** Set once cleanup has started (a failure seen after that is a consequence of the interruption). */
  cleaning: boolean;
  cleaned: boolean;
} = { tempRoot: null, keep: false, sshd: null, server: null, cleaning: false, cleaned: false };

let cleanupPromise: Promise<void> | null = null;

/** Stops the server and sshd, kills leftover children, removes the temporary folder. Idempotent. */
function cleanup(): Promise<void> {
  cleanupPromise ??= (async () => {
    state.cleaning = true;
    killAllSync(); // running agent / pipeline / warm-up first, so that nothing reacts to the server going away
    if (state.server) await state.server.stop(3000).catch(() => undefined);
    state.server = null;
    if (state.sshd) await state.sshd.stop().catch(() => undefined);
    state.sshd = null;
    killAllSync();
    if (state.tempRoot) {
      if (state.keep) process.stderr.write(`kept temporary folder: ${state.tempRoot}\n`);
      else
        await rm(state.tempRoot, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 }).catch((err: unknown) =>
          process.stderr.write(`could not remove ${state.tempRoot}: ${String(err)}\n`),
        );
    }
    state.cleaned = true;
  })();
  return cleanupPromise;
}

process.on('exit', () => {
  // Last resort (process.exit from anywhere): nothing asynchronous can run here.
  killAllSync();
  state.sshd?.killSync();
  state.server?.killSync();
  if (!state.cleaned && state.tempRoot && !state.keep) {
    try {
      rmSync(state.tempRoot, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
});

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping and cleaning up...\n`);
    void cleanup().finally(() => process.exit(code));
  });
}

// ---------------------------------------------------------------------------------------------
// Main

/** One repetition: the references and every nbackup mode, in the given order. */
async function oneRun(
  i: number,
  order: RunRecord['order'],
  opts: Options,
  dirs: string[],
  modes: Mode[],
  refs: ReferenceKind[],
  ref: ReferenceSetup | null,
  nb: NbackupSetup,
  rewarm: () => Promise<void>,
): Promise<RunRecord> {
  const references: RunRecord['references'] = {};
  const nbackup: NbackupRun[] = [];
  const hooks = { onServer: (s: ServerHandle | null) => (state.server = s), interrupted: () => state.cleaning, beforeAgent: rewarm };
  const doRef = async () => {
    if (!ref) return;
    for (const kind of refs) {
      await rewarm();
      log(`run ${i}/${opts.runs}: reference ${kind}...`);
      const r = await runReference(ref, kind, dirs, i, opts.keep);
      references[kind] = r;
      log(`run ${i}/${opts.runs}: reference ${kind} ${fmtSeconds(r.seconds)}, ${fmtBytes(r.outputBytes)}`);
    }
  };
  const doNb = async () => {
    for (const mode of modes) {
      const label = modeLabel(mode);
      log(`run ${i}/${opts.runs}: nbackup ${label}...`);
      const r = await runNbackup(nb, opts, dirs, mode, i, hooks);
      nbackup.push(r);
      log(
        `run ${i}/${opts.runs}: nbackup ${label} ${fmtSeconds(r.seconds)}, ${fmtBytes(r.outputBytes)}, ` +
          `agent ${fmtMiB(r.agentPeakRss)} ${fmtSeconds(r.agentCpu)} CPU, server ${fmtMiB(r.serverPeakRss)} ${fmtSeconds(r.serverCpu)} CPU, ${mode.format} -t ${r.gzipTest.ok ? 'OK' : 'FAILED'}`,
      );
    }
  };
  if (order === 'reference-first') {
    await doRef();
    await doNb();
  } else {
    await doNb();
    await doRef();
  }
  return { run: i, order, references, nbackup };
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
  state.keep = opts.keep;
  for (const d of opts.dirs) {
    const st = await stat(d).catch(() => null);
    if (!st?.isDirectory()) throw new Fatal(`--dir ${d}: not a folder`);
  }

  const cpus = availableParallelism();
  const tar = findExecutable('tar');
  if (!tar) throw new Fatal('tar is required (for the warm-up and the reference)');

  // Reference prerequisites.
  const { found, tools, missing } = findReferenceTools();
  let referenceSkipped: string | null = null;
  if (missing.length > 0) {
    referenceSkipped = `missing ${missing.join(', ')}`;
    process.stderr.write(`\nNOTICE: reference pipeline (tar | pigz | ssh) SKIPPED: ${referenceSkipped}. Only nbackup's figures are reported.\n\n`);
  }

  state.tempRoot = await mkdtemp(join(tmpdir(), 'nbackup-bench-'));
  log(`temporary folder: ${state.tempRoot}`);

  const versions = {
    node: process.version,
    tar: await toolVersion(tar, ['--version']),
    pigz: found.pigz ? await toolVersion(found.pigz, ['--version']) : null,
    ssh: found.ssh ? await toolVersion(found.ssh, ['-V']) : null,
  };

  // Reference setup: a private sshd.
  let ref: ReferenceSetup | null = null;
  if (tools && !referenceSkipped) {
    try {
      ref = await setUpReference(state.tempRoot, tar, tools, cpus, (sshd) => (state.sshd = sshd));
      log(`private sshd listening on 127.0.0.1:${ref.sshd.port}`);
    } catch (err) {
      referenceSkipped = `the private sshd could not be started: ${err instanceof Error ? err.message : String(err)}`;
      process.stderr.write(`\nNOTICE: reference pipeline SKIPPED: ${referenceSkipped}\n\n`);
    }
  }

  // nbackup setup.
  const nbRoot = join(state.tempRoot, 'nbackup');
  const nb: NbackupSetup = { pki: await makeBenchPki(join(nbRoot, 'pki'), AGENT_NAME), root: nbRoot };

  const dirs = opts.smallFiles > 0 ? [await makeSmallFiles(join(state.tempRoot, 'small-files'), opts.smallFiles, opts.perFolder)] : opts.dirs;
  log(`measuring input (du -sb ${dirs.join(' ')})...`);
  const du = await duBytes(dirs);
  log(`warming the page cache (tar -cf - ... > /dev/null)...`);
  const warm = await warmCache(tar, dirs);
  log(`warm-up: ${fmtBytes(warm.tarBytes)} tar stream in ${warm.seconds.toFixed(2)} s`);

  if (opts.restore) {
    return restoreBench({ root: nbRoot, dirs, runs: opts.runs, pki: nb.pki, tar, ref, onServer: (s) => (state.server = s) });
  }

  const modes: Mode[] = opts.formats.flatMap((format) => opts.parallels.map((parallels) => ({ format, parallels })));
  // The pigz pipeline is every mode's yardstick; the zstd one runs when a zstd mode does.
  const refs: ReferenceKind[] = ['pigz', ...(opts.formats.includes('zstd') && ref?.zstd ? (['zstd'] as const) : [])];
  // On a machine that drops page cache left untouched for a few seconds (DAMON's proactive reclaim
  // does on this one), a single warm-up leaves the later runs reading from disk: every timed run,
  // reference or nbackup, reads the data again right before it starts.
  const rewarm = async (): Promise<void> => {
    if (!opts.warmEach) return;
    const w = await warmCache(tar, dirs);
    log(`page cache warmed again (${w.seconds.toFixed(2)} s)`);
  };
  const records: RunRecord[] = [];
  for (let i = 1; i <= opts.runs; i++) {
    records.push(await oneRun(i, i % 2 === 1 ? 'reference-first' : 'nbackup-first', opts, dirs, modes, refs, ref, nb, rewarm));
  }
  const gzipFailures = records.flatMap((r) => r.nbackup).filter((r) => !r.gzipTest.ok).length;

  await report({ opts, dirs, modes, refs, cpus, versions, du, warm, ref, referenceSkipped, records });
  return gzipFailures === 0 ? 0 : 1;
}

main()
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    if (state.cleaning) return; // interrupted: the signal handler cleans up and exits
    process.stderr.write(`\nbench failed: ${err instanceof Fatal ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanup();
    process.exit(1);
  });

/**
 * The benchmark's summary: a text report on stdout (settings, a table of medians, ratios, per-run
 * figures) and the same figures as JSON in bench/results/latest.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus as osCpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { modeLabel, type NbackupRun } from './nbackup-run.js';
import type { Options } from './options.js';
import { REPO_ROOT } from './paths.js';
import type { ReferenceRun, ReferenceSetup } from './reference.js';
import { fmtBytes, fmtMiB, fmtRate, fmtSeconds, log, median, ratio, table } from './util.js';

export interface RunRecord {
  run: number;
  order: 'reference-first' | 'nbackup-first';
  reference: ReferenceRun | null;
  /** One nbackup run per `--parallels` value, in that order. */
  nbackup: NbackupRun[];
}

interface ReportInput {
  opts: Options;
  cpus: number;
  versions: { node: string; tar: string | null; pigz: string | null; ssh: string | null };
  du: { total: number; perDir: Record<string, number> };
  warm: { tarBytes: number; seconds: number };
  ref: ReferenceSetup | null;
  referenceSkipped: string | null;
  records: RunRecord[];
}

/** Medians over the runs: the reference's, and each nbackup mode's with its ratios to the reference. */
function summarize(input: ReportInput) {
  const { opts, records } = input;
  const refSec = median(records.map((r) => r.reference?.seconds));
  const refOut = median(records.map((r) => r.reference?.outputBytes));
  const modes = opts.parallels.map((p, k) => {
    const runs = records.map((r) => r.nbackup[k]);
    const seconds = median(runs.map((r) => r.seconds));
    const outputBytes = median(runs.map((r) => r.outputBytes));
    return {
      parallels: p,
      label: modeLabel(p),
      runs,
      seconds,
      outputBytes,
      agentRss: median(runs.map((r) => r.agentPeakRss)),
      serverRss: median(runs.map((r) => r.serverPeakRss)),
      gzipSec: median(runs.map((r) => r.gzipTest.seconds)),
      gzipOk: runs.every((r) => r.gzipTest.ok),
      timeRatio: ratio(seconds, refSec),
      sizeRatio: ratio(outputBytes, refOut),
    };
  });
  return { refSec, refOut, modes, last: records[records.length - 1].nbackup[0] };
}

type Summary = ReturnType<typeof summarize>;

function perRunTable(records: RunRecord[], modes: Summary['modes']): string {
  return table(
    ['run', 'order', 'mode', 'ref time', 'nbackup time', 'ratio', 'ref output', 'nbackup output', 'agent RSS', 'server RSS', 'gzip -t'],
    records.flatMap((r) =>
      modes.map((m, k) => {
        const n = r.nbackup[k];
        return [
          String(r.run),
          r.order,
          m.label,
          fmtSeconds(r.reference?.seconds ?? null),
          fmtSeconds(n.seconds),
          ratio(n.seconds, r.reference?.seconds ?? null)?.toFixed(2) ?? '-',
          r.reference ? r.reference.outputBytes.toLocaleString('en-US') : '-',
          n.outputBytes.toLocaleString('en-US'),
          fmtMiB(n.agentPeakRss),
          fmtMiB(n.serverPeakRss),
          n.gzipTest.ok ? 'OK' : 'FAILED',
        ];
      }),
    ),
  );
}

function textReport(input: ReportInput, s: Summary): string {
  const { opts, cpus, versions, du, warm, ref, referenceSkipped, records } = input;
  const { refSec, refOut, modes, last } = s;
  const inputBytes = warm.tarBytes;
  const med = opts.runs > 1 ? ` (median of ${opts.runs})` : '';

  const lines: string[] = [];
  lines.push('');
  lines.push('================ nbackup benchmark ================');
  lines.push(`date        ${new Date().toISOString()}`);
  lines.push(`machine     ${cpus} CPUs (${osCpus()[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}, node ${process.version}`);
  lines.push(`dirs        ${opts.dirs.join(' ')}`);
  lines.push(`input       tar stream ${fmtBytes(inputBytes)}; du -sb ${fmtBytes(du.total)}${last.files !== null ? `; ${last.files.toLocaleString('en-US')} entries (agent)` : ''}`);
  lines.push(`settings    runs ${opts.runs}, parallels ${opts.parallels.join(',')}, gzip level 1 on both sides, page cache warmed (${warm.seconds.toFixed(1)} s)`);
  lines.push(
    ref
      ? `reference   tar -cf - DIRS | pigz -1 -p${cpus} | ssh -p ${ref.sshd.port} ... 127.0.0.1 'cat > FILE'   (${versions.ssh ?? 'ssh ?'})`
      : `reference   SKIPPED: ${referenceSkipped}`,
  );
  lines.push(`nbackup     node dist/cmd/nbackup-agent.js --once → nbackup-server, TLS 1.3 mTLS on 127.0.0.1, gzip: ${last.gzip ?? '?'}`);
  lines.push('');
  lines.push(
    table(
      ['', 'reference (tar|pigz|ssh)', ...modes.map((m) => `nbackup ${m.label}`)],
      [
        [`wall time${med}`, ref ? fmtSeconds(refSec) : 'skipped', ...modes.map((m) => fmtSeconds(m.seconds))],
        ['time / reference', ref ? '1.00x' : '-', ...modes.map((m) => (m.timeRatio !== null ? `${m.timeRatio.toFixed(2)}x` : '-'))],
        ['throughput (tar input)', ref ? fmtRate(inputBytes, refSec) : '-', ...modes.map((m) => fmtRate(inputBytes, m.seconds))],
        [`output size${med}`, ref ? fmtBytes(refOut) : '-', ...modes.map((m) => fmtBytes(m.outputBytes))],
        [
          'compression ratio',
          ref && refOut ? `${((refOut / inputBytes) * 100).toFixed(1)} %` : '-',
          ...modes.map((m) => (m.outputBytes ? `${((m.outputBytes / inputBytes) * 100).toFixed(1)} %` : '-')),
        ],
        ['agent peak RSS (VmHWM)', '-', ...modes.map((m) => fmtMiB(m.agentRss))],
        ['server peak RSS (VmHWM)', '-', ...modes.map((m) => fmtMiB(m.serverRss))],
        ['gzip -t of the backup', '-', ...modes.map((m) => `${m.gzipOk ? 'OK' : 'FAILED'} (${fmtSeconds(m.gzipSec)}, untimed)`)],
      ],
    ),
  );
  lines.push('');
  for (const m of modes) {
    lines.push(
      m.timeRatio !== null
        ? `ratio nbackup ${m.label}/reference: time ${m.timeRatio.toFixed(2)}x (${m.timeRatio > 1 ? `nbackup ${((m.timeRatio - 1) * 100).toFixed(0)} % slower` : `nbackup ${((1 - m.timeRatio) * 100).toFixed(0)} % faster`}), output size ${m.sizeRatio?.toFixed(3) ?? '-'}x`
        : `ratio nbackup ${m.label}/reference: - (reference skipped)`,
    );
  }
  if (last.tarBytes !== null && last.tarBytes !== inputBytes) {
    lines.push(`note: the agent's tar stream was ${fmtBytes(last.tarBytes)} (GNU tar's: ${fmtBytes(inputBytes)})`);
  }
  if (last.warnings) lines.push(`note: the agent reported ${last.warnings} warning(s) while reading the sources`);
  if (opts.runs > 1 || modes.length > 1) {
    lines.push('');
    lines.push('per run:');
    lines.push(perRunTable(records, modes));
  }
  lines.push('===================================================');
  return lines.join('\n') + '\n';
}

function jsonReport(input: ReportInput, s: Summary): unknown {
  const { opts, cpus, versions, du, warm, ref, referenceSkipped, records } = input;
  const { refSec, refOut, modes, last } = s;
  const inputBytes = warm.tarBytes;
  return {
    date: new Date().toISOString(),
    machine: { cpus, cpuModel: osCpus()[0]?.model.trim() ?? null, totalMemBytes: totalmem(), kernel: release() },
    versions,
    options: opts,
    input: { tarStreamBytes: inputBytes, duBytes: du.total, duPerDir: du.perDir, warmupSeconds: warm.seconds, files: last.files },
    reference: ref
      ? {
          command: `tar -cf - DIRS | pigz -1 -p${cpus} | ssh -p PORT -i KEY -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR 127.0.0.1 'cat > OUTFILE'`,
          seconds: refSec,
          outputBytes: refOut,
          mbPerS: refSec ? inputBytes / 1e6 / refSec : null,
        }
      : { skipped: referenceSkipped },
    nbackup: modes.map((m) => ({
      parallels: m.parallels,
      seconds: m.seconds,
      outputBytes: m.outputBytes,
      mbPerS: m.seconds ? inputBytes / 1e6 / m.seconds : null,
      agentPeakRssBytes: m.agentRss,
      serverPeakRssBytes: m.serverRss,
      gzipTestOk: m.gzipOk,
      gzipTestSeconds: m.gzipSec,
      ratio: { time: m.timeRatio, outputSize: m.sizeRatio },
    })),
    runs: records.map((r) => ({
      run: r.run,
      order: r.order,
      reference: r.reference ? { seconds: r.reference.seconds, outputBytes: r.reference.outputBytes } : null,
      nbackup: r.nbackup.map((n, k) => ({
        parallels: opts.parallels[k],
        seconds: n.seconds,
        outputBytes: n.outputBytes,
        agentPeakRssBytes: n.agentPeakRss,
        serverPeakRssBytes: n.serverPeakRss,
        gzipTest: n.gzipTest,
        tarBytes: n.tarBytes,
        files: n.files,
        warnings: n.warnings,
        ratio: ratio(n.seconds, r.reference?.seconds ?? null),
      })),
    })),
  };
}

/** Prints the summary on stdout and writes bench/results/latest.json. */
export async function report(input: ReportInput): Promise<void> {
  const s = summarize(input);
  process.stdout.write(textReport(input, s));
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  const jsonPath = join(resultsDir, 'latest.json');
  await writeFile(jsonPath, JSON.stringify(jsonReport(input, s), null, 2) + '\n');
  log(`summary written to ${jsonPath}`);
}

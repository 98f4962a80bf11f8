/**
 * The benchmark's summary: a text report on stdout (settings, a table of medians, ratios, per-run
 * figures) and the same figures as JSON in bench/results/latest.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus as osCpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { modeLabel, type Mode, type NbackupRun } from './nbackup-run.js';
import type { Options } from './options.js';
import { REPO_ROOT } from './paths.js';
import type { ReferenceKind, ReferenceRun, ReferenceSetup } from './reference.js';
import { fmtBytes, fmtMiB, fmtRate, fmtSeconds, log, median, ratio, table } from './util.js';

export interface RunRecord {
  run: number;
  order: 'reference-first' | 'nbackup-first';
  references: Partial<Record<ReferenceKind, ReferenceRun>>;
  /** One nbackup run per mode (format × parallels), in the order of `modes`. */
  nbackup: NbackupRun[];
}

interface ReportInput {
  opts: Options;
  dirs: string[];
  modes: Mode[];
  refs: ReferenceKind[];
  cpus: number;
  versions: { node: string; tar: string | null; pigz: string | null; ssh: string | null };
  du: { total: number; perDir: Record<string, number> };
  warm: { tarBytes: number; seconds: number };
  ref: ReferenceSetup | null;
  referenceSkipped: string | null;
  records: RunRecord[];
}

const REF_LABEL: Record<ReferenceKind, string> = { pigz: 'tar|pigz -1|ssh', zstd: 'tar|zstd -3 -T0|ssh' };

/**
 * Medians over the runs: each reference's, and each nbackup mode's with its ratios to the pigz
 * reference (time) and to the reference of its own format (size).
 */
function summarize(input: ReportInput) {
  const { records } = input;
  const refs = input.refs.map((kind) => ({
    kind,
    label: REF_LABEL[kind],
    seconds: median(records.map((r) => r.references[kind]?.seconds)),
    outputBytes: median(records.map((r) => r.references[kind]?.outputBytes)),
  }));
  const pigz = refs.find((r) => r.kind === 'pigz');
  const modes = input.modes.map((mode, k) => {
    const runs = records.map((r) => r.nbackup[k]);
    const seconds = median(runs.map((r) => r.seconds));
    const outputBytes = median(runs.map((r) => r.outputBytes));
    const own = refs.find((r) => r.kind === (mode.format === 'zstd' ? 'zstd' : 'pigz'));
    return {
      mode,
      label: modeLabel(mode),
      runs,
      seconds,
      outputBytes,
      agentRss: median(runs.map((r) => r.agentPeakRss)),
      serverRss: median(runs.map((r) => r.serverPeakRss)),
      agentCpu: median(runs.map((r) => r.agentCpu)),
      serverCpu: median(runs.map((r) => r.serverCpu)),
      engine: runs[runs.length - 1].engine,
      gzipSec: median(runs.map((r) => r.gzipTest.seconds)),
      gzipOk: runs.every((r) => r.gzipTest.ok),
      timeRatio: ratio(seconds, pigz?.seconds ?? null),
      timeRatioOwn: ratio(seconds, own?.seconds ?? null),
      sizeRatio: ratio(outputBytes, pigz?.outputBytes ?? null),
      sizeRatioOwn: ratio(outputBytes, own?.outputBytes ?? null),
    };
  });
  return { refs, pigz, modes, last: records[records.length - 1].nbackup[0] };
}

type Summary = ReturnType<typeof summarize>;

const x = (v: number | null, digits = 2) => (v === null ? '-' : `${v.toFixed(digits)}x`);

function perRunTable(records: RunRecord[], s: Summary): string {
  return table(
    ['run', 'order', 'mode', 'ref pigz', 'nbackup', 'vs pigz', 'output', 'vs pigz size', 'agent CPU', 'server CPU', 'agent RSS', 'server RSS', 'test'],
    records.flatMap((r) =>
      s.modes.map((m, k) => {
        const n = r.nbackup[k];
        const ref = r.references.pigz ?? null;
        return [
          String(r.run),
          r.order,
          m.label,
          fmtSeconds(ref?.seconds ?? null),
          fmtSeconds(n.seconds),
          x(ratio(n.seconds, ref?.seconds ?? null)),
          n.outputBytes.toLocaleString('en-US'),
          x(ratio(n.outputBytes, ref?.outputBytes ?? null), 3),
          fmtSeconds(n.agentCpu),
          fmtSeconds(n.serverCpu),
          fmtMiB(n.agentPeakRss),
          fmtMiB(n.serverPeakRss),
          n.gzipTest.ok ? 'OK' : 'FAILED',
        ];
      }),
    ),
  );
}

function textReport(input: ReportInput, s: Summary): string {
  const { opts, dirs, cpus, versions, du, warm, ref, referenceSkipped, records } = input;
  const { refs, modes, last } = s;
  const inputBytes = warm.tarBytes;
  const med = opts.runs > 1 ? ` (median of ${opts.runs})` : '';
  const refCell = (f: (r: Summary['refs'][number]) => string) => refs.map((r) => (ref ? f(r) : 'skipped'));

  const lines: string[] = [];
  lines.push('');
  lines.push('================ nbackup benchmark ================');
  lines.push(`date        ${new Date().toISOString()}`);
  lines.push(`machine     ${cpus} CPUs (${osCpus()[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}, node ${process.version}`);
  lines.push(`dirs        ${opts.smallFiles > 0 ? `${opts.smallFiles.toLocaleString('en-US')} generated files of 1-4 KiB, ${opts.perFolder.toLocaleString('en-US')} per folder, in ` : ''}${dirs.join(' ')}`);
  lines.push(`input       tar stream ${fmtBytes(inputBytes)}; du -sb ${fmtBytes(du.total)}${last.files !== null ? `; ${last.files.toLocaleString('en-US')} entries (agent)` : ''}`);
  lines.push(`settings    runs ${opts.runs}, parallels ${opts.parallels.join(',')}, formats ${opts.formats.join(',')} at their default levels, page cache warmed (${warm.seconds.toFixed(1)} s)${opts.warmEach ? ' and again before every timed run' : ' once'}`);
  lines.push(
    ref
      ? `references  tar -cf - DIRS | {pigz -1 -p${cpus} | zstd -3 -T0} | ssh -p ${ref.sshd.port} ... 127.0.0.1 'cat > FILE'   (${versions.ssh ?? 'ssh ?'})`
      : `references  SKIPPED: ${referenceSkipped}`,
  );
  lines.push(`nbackup     node dist/cmd/nbackup-agent.js --once → nbackup-server, TLS 1.3 mTLS on 127.0.0.1; engines: ${modes.map((m) => `${m.label} ${m.engine ?? '?'}`).join(', ')}`);
  lines.push(`CPU         user + system seconds from /proc/PID/stat: the agent's whole process, the server's during the agent's run`);
  lines.push('');
  lines.push(
    table(
      ['', ...refs.map((r) => r.label), ...modes.map((m) => `nbackup ${m.label}`)],
      [
        [`wall time${med}`, ...refCell((r) => fmtSeconds(r.seconds)), ...modes.map((m) => fmtSeconds(m.seconds))],
        ['time / pigz reference', ...refCell((r) => x(ratio(r.seconds, s.pigz?.seconds ?? null))), ...modes.map((m) => x(m.timeRatio))],
        ['throughput (tar input)', ...refCell((r) => fmtRate(inputBytes, r.seconds)), ...modes.map((m) => fmtRate(inputBytes, m.seconds))],
        [`output size${med}`, ...refCell((r) => fmtBytes(r.outputBytes)), ...modes.map((m) => fmtBytes(m.outputBytes))],
        ['size / pigz reference', ...refCell((r) => x(ratio(r.outputBytes, s.pigz?.outputBytes ?? null), 3)), ...modes.map((m) => x(m.sizeRatio, 3))],
        [`agent CPU${med}`, ...refs.map(() => '-'), ...modes.map((m) => fmtSeconds(m.agentCpu))],
        [`server CPU${med}`, ...refs.map(() => '-'), ...modes.map((m) => fmtSeconds(m.serverCpu))],
        ['agent peak RSS (VmHWM)', ...refs.map(() => '-'), ...modes.map((m) => fmtMiB(m.agentRss))],
        ['server peak RSS (VmHWM)', ...refs.map(() => '-'), ...modes.map((m) => fmtMiB(m.serverRss))],
        ['gzip -t / zstd -t', ...refs.map(() => '-'), ...modes.map((m) => `${m.gzipOk ? 'OK' : 'FAILED'} (${fmtSeconds(m.gzipSec)}, untimed)`)],
      ],
    ),
  );
  lines.push('');
  for (const m of modes) {
    lines.push(
      m.timeRatio !== null
        ? `ratio nbackup ${m.label}: time ${x(m.timeRatio)} of tar|pigz|ssh${m.mode.format === 'zstd' ? ` (${x(m.timeRatioOwn)} of tar|zstd|ssh)` : ''}, ` +
            `size ${x(m.sizeRatio, 3)} of pigz's${m.mode.format === 'zstd' ? ` (${x(m.sizeRatioOwn, 3)} of zstd -3's)` : ''}`
        : `ratio nbackup ${m.label}: - (reference skipped)`,
    );
  }
  if (last.tarBytes !== null && last.tarBytes !== inputBytes) {
    lines.push(`note: the agent's tar stream was ${fmtBytes(last.tarBytes)} (GNU tar's: ${fmtBytes(inputBytes)})`);
  }
  if (last.warnings) lines.push(`note: the agent reported ${last.warnings} warning(s) while reading the sources`);
  if (opts.runs > 1 || modes.length > 1) {
    lines.push('');
    lines.push('per run:');
    lines.push(perRunTable(records, s));
  }
  lines.push('===================================================');
  return lines.join('\n') + '\n';
}

function jsonReport(input: ReportInput, s: Summary): unknown {
  const { opts, dirs, cpus, versions, du, warm, referenceSkipped, records } = input;
  const inputBytes = warm.tarBytes;
  return {
    date: new Date().toISOString(),
    machine: { cpus, cpuModel: osCpus()[0]?.model.trim() ?? null, totalMemBytes: totalmem(), kernel: release() },
    versions,
    options: opts,
    input: { dirs, tarStreamBytes: inputBytes, duBytes: du.total, duPerDir: du.perDir, warmupSeconds: warm.seconds, files: s.last.files },
    references: referenceSkipped
      ? { skipped: referenceSkipped }
      : s.refs.map((r) => ({ kind: r.kind, command: r.label, seconds: r.seconds, outputBytes: r.outputBytes, mbPerS: r.seconds ? inputBytes / 1e6 / r.seconds : null })),
    nbackup: s.modes.map((m) => ({
      format: m.mode.format,
      parallels: m.mode.parallels,
      engine: m.engine,
      seconds: m.seconds,
      outputBytes: m.outputBytes,
      mbPerS: m.seconds ? inputBytes / 1e6 / m.seconds : null,
      agentCpuSeconds: m.agentCpu,
      serverCpuSeconds: m.serverCpu,
      agentPeakRssBytes: m.agentRss,
      serverPeakRssBytes: m.serverRss,
      testOk: m.gzipOk,
      ratio: { timeVsPigz: m.timeRatio, timeVsOwn: m.timeRatioOwn, sizeVsPigz: m.sizeRatio, sizeVsOwn: m.sizeRatioOwn },
    })),
    runs: records.map((r) => ({
      run: r.run,
      order: r.order,
      references: r.references,
      nbackup: r.nbackup.map((n, k) => ({ format: input.modes[k].format, parallels: input.modes[k].parallels, ...n })),
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

/**
 * Codec measurements: which engine serves which gzip level, and what each level costs.
 *
 *   npm run bench:codecs -- [--dir PATH]... [--sample-mib N]
 *
 * A sample of the benchmark's tar stream (`tar -cf - DIRS`, default /usr/share and
 * /usr/lib/x86_64-linux-gnu): every k-th MiB, spread over the whole stream, N MiB in all (default
 * 256). Each engine level compresses it the way the agent does, one 1 MiB block at a time into an
 * independent gzip member or zstd frame, one block after another (one core); `pigz -1 -p1`,
 * `pigz -6 -p1` and `zstd -3 -T1` compress the same sample as one stream, for reference. Printed:
 * CPU seconds per GB of input (user + sys of this process, which runs the blocks on its thread
 * pool), output size, and size relative to pigz -1. Written to bench/results/codecs.json.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { engineCodec, describeEngines, type Engine } from '../src/agent/pipeline/codecs.js';
import { REPO_ROOT } from './paths.js';
import { duBytes } from './reference.js';
import { Fatal, findExecutable, log, table, track } from './util.js';

const MIB = 1024 * 1024;
const DEFAULT_DIRS = ['/usr/share', '/usr/lib/x86_64-linux-gnu'];

interface Row {
  name: string;
  engine: string;
  level: number;
  inputBytes: number;
  outputBytes: number;
  cpuSeconds: number;
}

function parseArgs(argv: string[]): { dirs: string[]; sampleMiB: number } {
  const dirs: string[] = [];
  let sampleMiB = 256;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dir' && argv[i + 1]) dirs.push(argv[++i]);
    else if (a === '--sample-mib' && /^\d+$/.test(argv[i + 1] ?? '')) sampleMiB = Math.max(1, Number(argv[++i]));
    else throw new Fatal(`usage: npm run bench:codecs -- [--dir PATH]... [--sample-mib N] (got ${JSON.stringify(a)})`);
  }
  return { dirs: dirs.length > 0 ? dirs : DEFAULT_DIRS, sampleMiB };
}

/** Every `stride`-th MiB of `tar -cf - dirs`, at most `max` blocks. */
function sampleTar(dirs: string[], stride: number, max: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-cf', '-', ...dirs], { stdio: ['ignore', 'pipe', 'ignore'] });
    track(child);
    const blocks: Buffer[] = [];
    let current = Buffer.allocUnsafe(MIB);
    let filled = 0;
    let index = 0;
    child.stdout.on('data', (c: Buffer) => {
      for (let off = 0; off < c.length; ) {
        const n = c.copy(current, filled, off);
        filled += n;
        off += n;
        if (filled < MIB) continue;
        if (index++ % stride === 0 && blocks.length < max) {
          blocks.push(current);
          current = Buffer.allocUnsafe(MIB);
        }
        filled = 0;
      }
      if (blocks.length >= max) child.kill();
    });
    child.once('error', reject);
    child.once('close', () => resolve(blocks));
  });
}

async function measureEngine(engine: Engine, level: number, blocks: Buffer[]): Promise<Row | null> {
  const codec = engineCodec(engine, level);
  if (!codec) return null;
  const out = Buffer.allocUnsafe(codec.bound(MIB));
  let outputBytes = 0;
  const before = process.cpuUsage();
  for (const b of blocks) outputBytes += (await codec.compress(b, out)).length;
  const used = process.cpuUsage(before);
  return {
    name: `${engine} ${level}`,
    engine,
    level,
    inputBytes: blocks.length * MIB,
    outputBytes,
    cpuSeconds: (used.user + used.system) / 1e6,
  };
}

/** A single-threaded command compressing the sample on stdin: its output size and wall time. */
function measureCommand(name: string, cmd: string, args: string[], blocks: Buffer[]): Promise<Row> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    track(child);
    let outputBytes = 0;
    child.stdout.on('data', (c: Buffer) => (outputBytes += c.length));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) return reject(new Fatal(`${name} exited with ${code}`));
      resolve({ name, engine: cmd, level: 0, inputBytes: blocks.length * MIB, outputBytes, cpuSeconds: (performance.now() - started) / 1000 });
    });
    void (async () => {
      for (const b of blocks) if (!child.stdin.write(b)) await new Promise((r) => child.stdin.once('drain', r));
      child.stdin.end();
    })();
  });
}

async function main(): Promise<void> {
  const { dirs, sampleMiB } = parseArgs(process.argv.slice(2));
  const { total } = await duBytes(dirs);
  const stride = Math.max(1, Math.floor(total / MIB / sampleMiB));
  log(`${describeEngines()}`);
  log(`sampling every ${stride}th MiB of tar -cf - ${dirs.join(' ')} (${(total / 1e9).toFixed(2)} GB on disk), ${sampleMiB} MiB at most`);
  const blocks = await sampleTar(dirs, stride, sampleMiB);
  if (blocks.length === 0) throw new Fatal('the sample is empty');
  const rows: Row[] = [];
  const refs: [string, string, string[]][] = [
    ['pigz -1 -p1', 'pigz', ['-1', '-p1', '-c']],
    ['pigz -6 -p1', 'pigz', ['-6', '-p1', '-c']],
    ['zstd -3 -T1', 'zstd', ['-3', '-T1', '-c']],
  ];
  for (const [name, cmd, args] of refs) {
    if (!findExecutable(cmd)) log(`${cmd} not found: ${name} left out`);
    else rows.push(await measureCommand(name, cmd, args, blocks));
    log(`${name} done`);
  }
  const engines: [Engine, number[]][] = [
    ['igzip', [0, 1, 2, 3]],
    ['libdeflate', [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]],
    ['zlib', [1, 6]],
    ['zstd', [1, 2, 3, 4, 6, 9, 12]],
  ];
  for (const [engine, levels] of engines) {
    for (const level of levels) {
      const row = await measureEngine(engine, level, blocks);
      if (row) rows.push(row);
      log(`${engine} ${level} done`);
    }
  }
  const pigz1 = rows.find((r) => r.name === 'pigz -1 -p1')?.outputBytes ?? null;
  const input = blocks.length * MIB;
  process.stdout.write(
    `\nsample: ${blocks.length} MiB of the tar stream (every ${stride}th MiB); one core; CPU s per GB of input (reference commands: wall s)\n\n` +
      table(
        ['codec', 'CPU s/GB', 'MB/s', 'output', 'ratio', 'vs pigz -1'],
        rows.map((r) => [
          r.name,
          ((r.cpuSeconds * 1e9) / input).toFixed(2),
          (input / 1e6 / r.cpuSeconds).toFixed(0),
          `${(r.outputBytes / 1e6).toFixed(1)} MB`,
          (r.outputBytes / input).toFixed(3),
          pigz1 ? (r.outputBytes / pigz1).toFixed(3) : '-',
        ]),
      ) +
      '\n',
  );
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'codecs.json'), JSON.stringify({ dirs, stride, sampleBytes: input, engines: describeEngines(), rows }, null, 2) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:codecs: ${err instanceof Fatal ? err.message : String((err as Error).stack ?? err)}\n`);
  process.exit(1);
});

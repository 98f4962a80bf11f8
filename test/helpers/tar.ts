/**
 * The reference implementations: GNU tar and gzip CLIs, run via execFile (no shell). An archive
 * the server stores must be restorable with exactly these commands.
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';

const DEFAULT_TIMEOUT_MS = 120_000;

export interface CliResult {
  stdout: string;
  stderr: string;
}

/** Runs a CLI; rejects with its stderr (and exit status) when it exits non-zero or times out. */
export function runCli(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const env = { ...process.env };
  delete env.TAR_OPTIONS; // keep tar's behaviour independent of the caller's environment
  delete env.GZIP;
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        cwd: opts.cwd,
        env,
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: 256 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as Error & { code?: unknown; signal?: unknown; killed?: boolean };
          const why = e.killed
            ? `timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`
            : `exit ${String(e.code)}${e.signal ? ` signal ${String(e.signal)}` : ''}`;
          const error = new Error(`${cmd} ${args.join(' ')}: ${why}\n${stderr.trim()}`) as Error & CliResult;
          error.stdout = stdout;
          error.stderr = stderr;
          reject(error);
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
  });
}

/** GNU tar's decompression option for an archive, from its name: `--zstd` for `.zst`, else `-z`. */
function tarCodecFlag(archive: string): string {
  return archive.endsWith('.zst') ? '--zstd' : '-z';
}

/**
 * `tar -xpf archive -C destDir --numeric-owner` with `-z` or `--zstd` by the archive's name
 * (destDir is created if missing). Resolves with tar's stderr (warnings, normally empty); rejects
 * with it on a non-zero exit.
 */
export async function gnuTarExtract(archive: string, destDir: string, opts: { timeoutMs?: number } = {}): Promise<string> {
  await mkdir(destDir, { recursive: true });
  const r = await runCli('tar', [tarCodecFlag(archive), '-xpf', archive, '-C', destDir, '--numeric-owner'], opts);
  return r.stderr;
}

/**
 * `gzip -t file`, or `zstd -t file` for a `.zst`: resolves if the file is a complete, valid
 * stream; rejects otherwise.
 */
export async function gzipTest(file: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  if (file.endsWith('.zst')) await runCli('zstd', ['-q', '-t', file], opts);
  else await runCli('gzip', ['-t', file], opts);
}

/**
 * `tar -tzf archive`: member names as stored (e.g. "./a/b", directories with a trailing "/").
 * Names are printed literally (--quoting-style=literal) so non-ASCII names come back as UTF-8.
 */
export async function gnuTarList(archive: string, opts: { timeoutMs?: number } = {}): Promise<string[]> {
  const r = await runCli('tar', ['--quoting-style=literal', tarCodecFlag(archive), '-tf', archive], opts);
  return r.stdout.split('\n').filter((l) => l.length > 0);
}

/** `tar -czf archive -C srcRoot [...extraArgs] .` — a reference archive made by GNU tar itself. */
export async function gnuTarCreate(
  srcRoot: string,
  archive: string,
  opts: { extraArgs?: string[]; timeoutMs?: number } = {},
): Promise<void> {
  await runCli('tar', ['-czf', archive, ...(opts.extraArgs ?? []), '-C', srcRoot, '.'], opts);
}

/**
 * `tar --compare -f archive -C dir --numeric-owner` (with `-z` or `--zstd`): resolves when GNU tar
 * finds every member in `dir` as the archive has it (contents, size, mode, owner, mtime, link
 * targets); rejects with the differences it lists.
 */
export async function gnuTarCompare(archive: string, dir: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  try {
    await runCli('tar', [tarCodecFlag(archive), '--compare', '-f', archive, '-C', dir, '--numeric-owner'], opts);
  } catch (err) {
    // tar lists the differences on stdout.
    const listed = ((err as Partial<CliResult>).stdout ?? '').split('\n').slice(0, 40).join('\n');
    throw new Error(`${(err as Error).message}\n${listed}`);
  }
}

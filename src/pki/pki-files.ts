import fs from 'node:fs';
import path from 'node:path';
import { nameProblem } from '../../protocol/names.js';
import { NbackupError, errnoCode, errorMessage } from '../errors.js';
import { createCa, issueAgent, issueServer, type Issued } from './certificates.js';

/**
 * `nbackup-server pki …`: the built-in PKI on disk. Everything lives in one folder:
 *
 *   ca.crt  ca.key            the CA (init-ca)
 *   server.crt  server.key    the server's certificate (issue-server)
 *   <name>.crt  <name>.key    one per agent (issue-agent NAME)
 *
 * Keys are written mode 0600, certificates 0644, and nothing is ever overwritten: a file that is
 * already there stops the command before anything is written, so a CA cannot be replaced by
 * accident (every certificate it signed would stop working).
 */
export interface PkiOptions {
  dir: string;
  days: number;
}

export const CA_FILES = { cert: 'ca.crt', key: 'ca.key' } as const;
export const SERVER_FILES = { cert: 'server.crt', key: 'server.key' } as const;

export function agentFiles(name: string): { cert: string; key: string } {
  const problem = nameProblem(name);
  if (problem !== null) throw new NbackupError('usage', `invalid agent name ${JSON.stringify(name)}: it ${problem}`);
  if (name === 'ca' || name === 'server') throw new NbackupError('usage', `the agent name ${JSON.stringify(name)} would collide with the ${name}'s own files; choose another`);
  return { cert: `${name}.crt`, key: `${name}.key` };
}

export async function initCa(cn: string, opts: PkiOptions): Promise<string[]> {
  fs.mkdirSync(opts.dir, { recursive: true, mode: 0o755 });
  refuseExisting(opts.dir, CA_FILES);
  return writePair(opts.dir, CA_FILES, await createCa(cn, opts.days));
}

export async function issueServerFiles(cn: string, san: readonly string[], opts: PkiOptions): Promise<string[]> {
  const ca = readCa(opts.dir);
  refuseExisting(opts.dir, SERVER_FILES);
  return writePair(opts.dir, SERVER_FILES, await issueServer(cn, san, { ca, days: opts.days }));
}

export async function issueAgentFiles(name: string, opts: PkiOptions): Promise<string[]> {
  const files = agentFiles(name);
  const ca = readCa(opts.dir);
  refuseExisting(opts.dir, files);
  return writePair(opts.dir, files, await issueAgent(name, { ca, days: opts.days }));
}

function readCa(dir: string): Issued {
  const read = (f: string): string => {
    const file = path.join(dir, f);
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      const hint = errnoCode(err) === 'ENOENT' ? ' (run `nbackup-server pki init-ca` first, or pass --dir)' : '';
      throw new NbackupError('tls', `cannot read ${file}: ${errorMessage(err)}${hint}`);
    }
  };
  return { certPem: read(CA_FILES.cert), keyPem: read(CA_FILES.key) };
}

function refuseExisting(dir: string, files: { cert: string; key: string }): void {
  for (const f of [files.key, files.cert]) {
    const file = path.join(dir, f);
    if (fs.existsSync(file)) throw new NbackupError('usage', `${file} already exists; nothing was written (remove it first to issue a new one)`);
  }
}

/**
 * Writes key (0600) then certificate (0644); returns their paths. Callers check for existing files
 * before generating keys; O_EXCL here still refuses one that appeared since.
 */
function writePair(dir: string, files: { cert: string; key: string }, issued: Issued): string[] {
  const key = path.join(dir, files.key);
  const cert = path.join(dir, files.cert);
  writeNew(key, issued.keyPem, 0o600);
  try {
    writeNew(cert, issued.certPem, 0o644);
  } catch (err) {
    fs.rmSync(key, { force: true });
    throw err;
  }
  return [key, cert];
}

function writeNew(file: string, text: string, mode: number): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') throw new NbackupError('usage', `${file} already exists; nothing was written (remove it first to issue a new one)`);
    throw new NbackupError('tls', `cannot write ${file}: ${errorMessage(err)}`);
  }
  try {
    fs.fchmodSync(fd, mode); // the umask must not loosen or tighten what we chose
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw new NbackupError('tls', `cannot write ${file}: ${errorMessage(err)}`);
  }
  fs.closeSync(fd);
}

/**
 * A throw-away PKI for mTLS tests, made with the `openssl` CLI (run via execFile, never a shell).
 * All keys are ECC P-256 (PKCS#8 PEM, unencrypted); all certificates are SHA-256 signed X.509 v3.
 *
 *   ca.crt / ca.key                     the test CA
 *   server.crt / server.key             SAN IP:127.0.0.1, DNS:localhost; EKU serverAuth
 *   agent-<name>.crt / agent-<name>.key CN=<name>; EKU clientAuth; one pair per agent
 *   rogue-ca.crt / rogue-ca.key         an unrelated CA (same CN shape, different key)
 *   rogue-client.crt / .key             CN=agents[0], EKU clientAuth, signed by the rogue CA
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { faketimeEnv } from './faketime.js';

export interface CertPair {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  caCert: string;
  /** The CA's private key, for tests that need to issue more certificates (see issueCert). */
  caKey: string;
  serverCert: string;
  serverKey: string;
  agents: Record<string, CertPair>;
  rogue: { caCert: string; caKey: string; cert: string; key: string };
}

export interface PkiOptions {
  agents: string[];
  /** Validity of the leaf certificates in days (default 365: past the agent's 30-day expiry warning). */
  days?: number;
  /**
   * Issue everything as if it were this many days ago (openssl under faketime), for a peer whose
   * clock is behind; `days` still counts from then.
   */
  backdateDays?: number;
}

const OPENSSL_TIMEOUT_MS = 15_000;

const REQ_CONFIG = `# written by test/helpers/pki.ts
[req]
distinguished_name = dn
string_mask = utf8only
utf8 = yes
prompt = no

[dn]
CN = placeholder

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

/** Runs openssl with the given arguments; rejects with its stderr on failure. */
export function openssl(args: string[], opts: { cwd?: string; timeoutMs?: number; backdateDays?: number } = {}): Promise<string> {
  const env = { ...process.env };
  delete env.OPENSSL_CONF; // only our explicit -config files count
  if (opts.backdateDays) Object.assign(env, faketimeEnv(`-${opts.backdateDays}d`));
  return new Promise((resolvePromise, reject) => {
    execFile(
      'openssl',
      args,
      { cwd: opts.cwd, env, timeout: opts.timeoutMs ?? OPENSSL_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`openssl ${args.join(' ')} failed: ${err.message}\n${String(stderr)}`));
        } else {
          resolvePromise(String(stdout));
        }
      },
    );
  });
}

/** Escapes a value for openssl's `-subj /CN=...` syntax. */
function subj(cn: string): string {
  return '/CN=' + cn.replace(/[\\/+=,]/g, (c) => '\\' + c);
}

function serial(): string {
  // Positive 63-bit serial, hex.
  const b = randomBytes(8);
  b[0] = (b[0] & 0x7f) | 0x10;
  return '0x' + b.toString('hex');
}

function fileSafe(name: string): string {
  // Agent names are valid path components already, but keep file names tame and unique.
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(name) ? name : 'x' + Buffer.from(name, 'utf8').toString('hex');
}

async function makeCa(dir: string, base: string, cn: string, reqConfig: string, backdateDays?: number): Promise<CertPair> {
  const cert = join(dir, `${base}.crt`);
  const key = join(dir, `${base}.key`);
  await openssl([
    'req', '-x509', '-new',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert,
    '-sha256', '-days', '3650', '-set_serial', serial(),
    '-utf8', '-subj', subj(cn),
    '-config', reqConfig, '-extensions', 'ca_ext',
  ], { backdateDays });
  return { cert, key };
}

export interface IssueOptions {
  /** Directory for the new files. */
  dir: string;
  /** Base file name (".crt" / ".key" / ".csr" / ".ext" are appended). */
  base: string;
  ca: CertPair;
  cn: string;
  usage: 'server' | 'client';
  /** subjectAltName value, e.g. "IP:127.0.0.1, DNS:localhost". Default: none. */
  san?: string;
  days?: number;
  /** openssl req config file; written into `dir` if omitted. */
  reqConfig?: string;
  backdateDays?: number;
}

/** Issues one ECC P-256 leaf certificate signed by `ca`. Returns absolute paths. */
export async function issueCert(o: IssueOptions): Promise<CertPair> {
  const dir = resolve(o.dir);
  await mkdir(dir, { recursive: true });
  const reqConfig = o.reqConfig ?? join(dir, `${o.base}.req.cnf`);
  if (!o.reqConfig) await writeFile(reqConfig, REQ_CONFIG);
  const cert = join(dir, `${o.base}.crt`);
  const key = join(dir, `${o.base}.key`);
  const csr = join(dir, `${o.base}.csr`);
  const ext = join(dir, `${o.base}.ext.cnf`);
  const lines = [
    '[leaf]',
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid, issuer',
  ];
  if (o.san) lines.push(`subjectAltName = ${o.san}`);
  await writeFile(ext, lines.join('\n') + '\n');
  await openssl([
    'req', '-new',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', csr,
    '-utf8', '-subj', subj(o.cn),
    '-config', reqConfig,
  ]);
  await openssl([
    'x509', '-req', '-in', csr,
    '-CA', o.ca.cert, '-CAkey', o.ca.key, '-set_serial', serial(),
    '-sha256', '-days', String(o.days ?? 365),
    '-extfile', ext, '-extensions', 'leaf',
    '-out', cert,
  ], { backdateDays: o.backdateDays });
  return { cert, key };
}

/**
 * Builds the whole PKI in `dir` (created if needed). Runs the openssl invocations in parallel;
 * typically takes ~100-300 ms.
 */
export async function makePki(dir: string, opts: PkiOptions): Promise<Pki> {
  if (opts.agents.length === 0) throw new Error('makePki: at least one agent name is required');
  if (new Set(opts.agents).size !== opts.agents.length) throw new Error('makePki: duplicate agent names');
  const root = resolve(dir);
  await mkdir(root, { recursive: true });
  const reqConfig = join(root, 'req.cnf');
  await writeFile(reqConfig, REQ_CONFIG);
  const backdateDays = opts.backdateDays;
  const days = (opts.days ?? 365) + (backdateDays ?? 0);

  const [ca, rogueCa] = await Promise.all([
    makeCa(root, 'ca', 'nbackup test CA', reqConfig, backdateDays),
    makeCa(root, 'rogue-ca', 'nbackup test CA', reqConfig, backdateDays),
  ]);

  const [server, rogueClient, ...agentPairs] = await Promise.all([
    issueCert({
      dir: root, base: 'server', ca, cn: 'localhost', usage: 'server',
      san: 'IP:127.0.0.1, DNS:localhost', days, reqConfig, backdateDays,
    }),
    issueCert({
      dir: root, base: 'rogue-client', ca: rogueCa, cn: opts.agents[0], usage: 'client', days, reqConfig, backdateDays,
    }),
    ...opts.agents.map((name) =>
      issueCert({ dir: root, base: `agent-${fileSafe(name)}`, ca, cn: name, usage: 'client', days, reqConfig, backdateDays }),
    ),
  ]);

  const agents: Record<string, CertPair> = {};
  opts.agents.forEach((name, i) => {
    agents[name] = agentPairs[i];
  });

  return {
    dir: root,
    caCert: ca.cert,
    caKey: ca.key,
    serverCert: server.cert,
    serverKey: server.key,
    agents,
    rogue: { caCert: rogueCa.cert, caKey: rogueCa.key, cert: rogueClient.cert, key: rogueClient.key },
  };
}

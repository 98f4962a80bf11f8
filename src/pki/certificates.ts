import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { NbackupError, errorMessage } from '../errors.js';

/**
 * The built-in PKI: an ECDSA P-256 CA, and server and agent certificates it signs, with the key
 * usages mTLS needs (server: serverAuth and its SANs; agent: clientAuth, the agent's name as CN).
 * Certificates and PKCS#8 keys are PEM text; writing them to disk is the caller's business.
 */
x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
/** Validity starts a little in the past, so that a peer whose clock is behind accepts it at once. */
const BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 3600 * 1000;

export interface Issued {
  certPem: string;
  keyPem: string;
}

export interface LeafOptions {
  /** The CA that signs: its certificate and private key as PEM. */
  ca: Issued;
  days: number;
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + days * DAY_MS) };
}

/** A JSON name with one CN: no DN string parsing, so any character of a name is taken literally. */
function cnName(cn: string): x509.JsonName {
  return [{ CN: [cn] }];
}

/** A self-signed CA certificate that may sign leaf certificates only (path length 0). */
export async function createCa(cn: string, days: number): Promise<Issued> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: cnName(cn),
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    ...validity(days),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

/** A server certificate for the names and addresses agents connect to (`san`: DNS names and IPs). */
export async function issueServer(cn: string, san: readonly string[], opts: LeafOptions): Promise<Issued> {
  if (san.length === 0) throw new NbackupError('usage', 'a server certificate needs at least one SAN (a DNS name or an IP address agents connect to)');
  const names = san.map((v): x509.JsonGeneralName => ({ type: isIP(v) ? 'ip' : 'dns', value: v }));
  return issueLeaf(cn, opts, x509.ExtendedKeyUsage.serverAuth, [new x509.SubjectAlternativeNameExtension(names, false)]);
}

/** An agent certificate: CN = the agent's name, which the server checks against the handshake. */
export async function issueAgent(name: string, opts: LeafOptions): Promise<Issued> {
  return issueLeaf(name, opts, x509.ExtendedKeyUsage.clientAuth, []);
}

async function issueLeaf(cn: string, opts: LeafOptions, usage: x509.ExtendedKeyUsage, extra: x509.Extension[]): Promise<Issued> {
  const { caCert, caKey } = await loadCa(opts.ca);
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    subject: cnName(cn),
    issuer: caCert.subjectName,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    ...validity(opts.days),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([usage], false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
      ...extra,
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

async function loadCa(ca: Issued): Promise<{ caCert: x509.X509Certificate; caKey: CryptoKey }> {
  try {
    const caCert = new x509.X509Certificate(ca.certPem);
    const der = x509.PemConverter.decodeFirst(ca.keyPem);
    const caKey = await webcrypto.subtle.importKey('pkcs8', der, KEY_ALGORITHM, false, ['sign']);
    return { caCert, caKey: caKey as CryptoKey };
  } catch (err) {
    throw new NbackupError('tls', `the CA certificate or key cannot be used: ${errorMessage(err)}`, { cause: err });
  }
}

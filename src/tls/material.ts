import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { NbackupError, errorMessage } from '../errors.js';

/**
 * Certificates and keys for mTLS, read and checked once at start-up so that a wrong path, a file
 * that is not PEM, or a key that does not belong to its certificate fails with the file's name
 * instead of surfacing later as an opaque handshake error.
 */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** CN of our own certificate, for messages. */
  commonName: string;
}

function readPem(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new NbackupError('tls', `cannot read ${what} ${file}: ${errorMessage(err)}`);
  }
}

function parseCert(pem: Buffer, file: string, what: string): crypto.X509Certificate {
  try {
    return new crypto.X509Certificate(pem);
  } catch (err) {
    throw new NbackupError('tls', `${what} ${file} is not a PEM certificate: ${errorMessage(err)}`);
  }
}

/** The CN of an X509Certificate `subject` ("C=..\nCN=web\+db\,1"), with RFC 4514 escapes undone. */
function commonNameOf(subject: string): string {
  const m = /^CN=(.*)$/m.exec(subject);
  return m ? m[1].replace(/\\(.)/g, '$1') : '';
}

export function loadTlsMaterial(files: { ca: string; cert: string; key: string }): TlsMaterial {
  const ca = readPem(files.ca, 'CA certificate');
  const cert = readPem(files.cert, 'certificate');
  const key = readPem(files.key, 'private key');
  const caX509 = parseCert(ca, files.ca, 'CA certificate');
  const x509 = parseCert(cert, files.cert, 'certificate');
  let privateKey: crypto.KeyObject;
  try {
    privateKey = crypto.createPrivateKey(key);
  } catch (err) {
    throw new NbackupError('tls', `private key ${files.key} cannot be parsed: ${errorMessage(err)}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new NbackupError('tls', `private key ${files.key} does not match certificate ${files.cert}`);
  }
  if (!x509.checkIssued(caX509) || !x509.verify(caX509.publicKey)) {
    throw new NbackupError('tls', `certificate ${files.cert} is not signed by the CA in ${files.ca}`);
  }
  const now = Date.now();
  if (Date.parse(x509.validTo) < now) throw new NbackupError('tls', `certificate ${files.cert} expired on ${x509.validTo}`);
  return { ca, cert, key, commonName: commonNameOf(x509.subject) };
}

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;

export function serverTlsOptions(m: TlsMaterial): tls.TlsOptions {
  return { ...TLS13, ca: m.ca, cert: m.cert, key: m.key, requestCert: true, rejectUnauthorized: true };
}

export function clientTlsOptions(m: TlsMaterial, host: string): tls.ConnectionOptions {
  // SNI may not carry an IP address; the certificate's IP SAN is still checked.
  const servername = /^[\d.]+$|:/.test(host) ? undefined : host;
  return { ...TLS13, ca: m.ca, cert: m.cert, key: m.key, host, servername, rejectUnauthorized: true };
}

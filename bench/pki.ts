/**
 * The benchmark's throw-away PKI, made with the product's own library (src/pki/certificates.ts) and
 * written as PEM files into a folder of the temporary tree (private keys mode 0600):
 *
 *   ca.crt                          the CA (its key stays in memory)
 *   server.crt / server.key         SAN 127.0.0.1 and localhost
 *   agent.crt / agent.key           CN = the agent's name
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, issueAgent, issueServer } from '../src/pki/certificates.js';

const DAYS = 30;

/** Absolute paths of the PEM files. */
export interface BenchPki {
  caCert: string;
  serverCert: string;
  serverKey: string;
  agentCert: string;
  agentKey: string;
}

export async function makeBenchPki(dir: string, agentName: string): Promise<BenchPki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = await createCa('nbackup bench CA', DAYS);
  const [server, agent] = await Promise.all([
    issueServer('localhost', ['127.0.0.1', 'localhost'], { ca, days: DAYS }),
    issueAgent(agentName, { ca, days: DAYS }),
  ]);
  const write = async (name: string, pem: string, mode: number): Promise<string> => {
    const file = join(dir, name);
    await writeFile(file, pem, { mode });
    return file;
  };
  return {
    caCert: await write('ca.crt', ca.certPem, 0o644),
    serverCert: await write('server.crt', server.certPem, 0o644),
    serverKey: await write('server.key', server.keyPem, 0o600),
    agentCert: await write('agent.crt', agent.certPem, 0o644),
    agentKey: await write('agent.key', agent.keyPem, 0o600),
  };
}

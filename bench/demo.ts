/**
 * `npm run demo [-- DIR]`: the whole product in one command, with nothing configured. Makes a
 * throwaway PKI with the built-in `pki` commands, starts a server on 127.0.0.1, backs DIR up
 * (default /usr/share/doc) with the progress bar, restores the archive with plain `tar` into a
 * temporary folder, compares it with DIR (`diff -r`), and prints where everything is and the
 * commands that do the same by hand. Everything stays in one /tmp folder for a look afterwards.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { initCa, issueAgentFiles, issueServerFiles } from '../src/pki/pki-files.js';
import { startServer } from './nbackup-server.js';
import { AGENT_BIN, SERVER_BIN } from './paths.js';

const say = (line = ''): void => void process.stdout.write(`${line}\n`);

async function main(): Promise<number> {
  const source = path.resolve(process.argv[2] ?? '/usr/share/doc');
  if (!fs.existsSync(source)) {
    process.stderr.write(`demo: ${source} does not exist; give a folder to back up: npm run demo -- /some/folder\n`);
    return 2;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nbackup-demo-'));
  const pkiDir = path.join(work, 'pki');
  const storage = path.join(work, 'storage');
  const restore = path.join(work, 'restore');
  say(`demo: everything goes under ${work}`);

  say('1/5 PKI: a CA, a server certificate for 127.0.0.1 and an agent certificate for "demo"');
  const pki = { dir: pkiDir, days: 365 };
  await initCa('nbackup demo CA', pki);
  await issueServerFiles('127.0.0.1', ['127.0.0.1', 'localhost'], pki);
  await issueAgentFiles('demo', pki);

  const serverYaml = path.join(work, 'server.yaml');
  fs.writeFileSync(
    serverYaml,
    stringify({
      server: { listen: '127.0.0.1:0' },
      tls: { ca_cert: 'pki/ca.crt', server_cert: 'pki/server.crt', server_key: 'pki/server.key' },
      storages: { demo: { base_dir: 'storage', max_backups: 3, min_free: 0 } },
      logging: { level: 'info', format: 'json' },
    }),
  );
  say('2/5 server: listening on 127.0.0.1 (an ephemeral port)');
  const server = await startServer(serverYaml);
  try {
    const agentYaml = path.join(work, 'agent.yaml');
    fs.writeFileSync(
      agentYaml,
      stringify({
        agent: { name: 'demo' },
        server: { address: `127.0.0.1:${server.port}` },
        tls: { ca_cert: 'pki/ca.crt', client_cert: 'pki/demo.crt', client_key: 'pki/demo.key' },
        backups: [{ name: 'files', storage: 'demo', schedule: '0 2 * * *', sources: [{ path: source }] }],
        logging: { level: 'warn', format: 'text' },
        daemon: { control_channel: { enabled: false } },
      }),
    );
    say(`3/5 agent: backing up ${source}`);
    const agent = spawn(process.execPath, [AGENT_BIN, '--config', agentYaml, '--once', '--progress'], { stdio: 'inherit' });
    const code = await new Promise<number | null>((resolve) => agent.once('close', resolve));
    if (code !== 0) {
      say(`demo: the agent exited with ${code}; the server's last lines:\n${server.output().slice(-20).join('\n')}`);
      return 1;
    }
    const dir = path.join(storage, 'demo', 'files');
    const archive = path.join(dir, fs.readdirSync(dir).filter((f) => f.endsWith('.tar.gz')).sort().pop()!);
    say(`4/5 restore: tar -xf ${archive}`);
    fs.mkdirSync(restore);
    const tar = spawnSync('tar', ['-xpf', archive, '-C', restore], { stdio: 'inherit' });
    if (tar.status !== 0) return 1;
    const restored = path.join(restore, source.replace(/^\/+/, ''));
    say(`5/5 compare: diff -r --no-dereference ${source} ${restored}`);
    const diff = spawnSync('diff', ['-r', '--no-dereference', source, restored], { stdio: 'inherit' });
    if (diff.status !== 0) {
      say('demo: the restored tree differs (see above); files the agent warned it could not read are left out');
      return 1;
    }
    say(`\nrestored tree identical to ${source} ✔  (archive ${fs.statSync(archive).size.toLocaleString('en-US')} bytes)`);
    say(`
where things are:
  ${pkiDir}/      ca.crt ca.key  server.crt server.key  demo.crt demo.key
  ${serverYaml}   ${agentYaml}
  ${archive}
  ${restored}

the same by hand (from the repository root):
  node ${path.relative(process.cwd(), SERVER_BIN)} pki init-ca --dir pki
  node ${path.relative(process.cwd(), SERVER_BIN)} pki issue-server --dir pki --san 127.0.0.1
  node ${path.relative(process.cwd(), SERVER_BIN)} pki issue-agent demo --dir pki
  node ${path.relative(process.cwd(), SERVER_BIN)} --config ${serverYaml}          # keeps running
  node ${path.relative(process.cwd(), AGENT_BIN)} --config ${agentYaml} --once --progress   # in a second terminal
  tar -xf <storage>/demo/files/<timestamp>.tar.gz -C /some/where`);
    return 0;
  } finally {
    await server.stop();
  }
}

process.exitCode = await main();

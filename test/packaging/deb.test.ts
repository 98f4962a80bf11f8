/**
 * packaging/build-deb.sh end to end: both .deb files build, lintian finds no error, they hold
 * what an operator needs, the units pass `systemd-analyze verify` against the package's own files
 * and score within the hardening budget, the packaged commands run from the package tree, and both
 * packages install with apt on a bare Debian 12 made by mmdebstrap, where a backup then runs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/proc.js';

const run = promisify(execFile);
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-deb-'));
const debs: Record<'agent' | 'server', string> = { agent: '', server: '' };

/** Highest acceptable `systemd-analyze security --offline=true` exposure per unit. */
const EXPOSURE_LIMIT = { server: 2.0, agent: 4.5 };

describe('.deb packages', { timeout: 600_000 }, () => {
  before(async () => {
    const r = await run('bash', [path.join(REPO_ROOT, 'packaging/build-deb.sh')], { cwd: REPO_ROOT, env: { ...process.env, OUTDIR: out }, timeout: 400_000, maxBuffer: 16 << 20 });
    for (const line of r.stdout.trim().split('\n')) {
      const m = /nbackup-(agent|server)_[^/]+\.deb$/.exec(line);
      if (m) debs[m[1] as 'agent' | 'server'] = line;
    }
    assert.ok(debs.agent && debs.server, r.stdout);
  });
  after(() => fs.rmSync(out, { recursive: true, force: true }));

  for (const role of ['agent', 'server'] as const) {
    const pkg = `nbackup-${role}`;

    it(`${pkg}: lintian reports no error`, async () => {
      const r = await run('lintian', ['--no-tag-display-limit', debs[role]], { timeout: 300_000, maxBuffer: 16 << 20 }).catch((e: { stdout: string; stderr: string }) => e);
      const errors = r.stdout.split('\n').filter((l) => l.startsWith('E:'));
      assert.deepEqual(errors, [], r.stdout + r.stderr);
    });

    it(`${pkg}: control fields, conffile, maintainer scripts and the files an operator needs`, async () => {
      const info = (await run('dpkg-deb', ['-f', debs[role]])).stdout;
      assert.match(info, new RegExp(`^Package: ${pkg}$`, 'm'));
      for (const dep of ['libisal2', 'libdeflate0', 'libzstd1', 'adduser']) assert.match(info, new RegExp(`^Depends: .*\\b${dep}\\b`, 'm'));
      const list = (await run('dpkg-deb', ['-c', debs[role]], { maxBuffer: 64 << 20 })).stdout;
      for (const f of [
        `./usr/bin/${pkg}`,
        `./usr/lib/nbackup/${role}/node`,
        `./usr/lib/nbackup/${role}/dist/cmd/${pkg}.js`,
        `./usr/lib/nbackup/${role}/build/Release/nbackup_codec.node`,
        `./usr/lib/nbackup/${role}/build/Release/nbackup_fs.node`,
        `./usr/lib/nbackup/${role}/package.json`,
        `./usr/share/doc/${pkg}/npm-packages.txt.gz`,
        `./etc/nbackup/${role}.yaml`,
        `./usr/share/man/man1/${pkg}.1.gz`,
        `./lib/systemd/system/${pkg}.service`,
        `./usr/share/doc/${pkg}/copyright`,
      ]) {
        assert.ok(list.split('\n').some((l) => l.endsWith(` ${f}`) || l.includes(` ${f} `)), `${f} in the package`);
      }
      // One bundle per command: no module tree, none of our other compiled files, no tests.
      assert.ok(!/node_modules\//.test(list), 'no node_modules: the npm packages are inside the bundle');
      assert.ok(!/\/dist\/(src|protocol|test|bench)\//.test(list), 'only dist/cmd/ is shipped');
      assert.ok(!/\.map$/m.test(list), 'no source maps');
      const ctrl = fs.mkdtempSync(path.join(out, 'ctrl-'));
      await run('dpkg-deb', ['-e', debs[role], ctrl]);
      assert.equal(fs.readFileSync(path.join(ctrl, 'conffiles'), 'utf8').trim(), `/etc/nbackup/${role}.yaml`);
      const postinst = fs.readFileSync(path.join(ctrl, 'postinst'), 'utf8');
      assert.match(postinst, /adduser --system --group/);
      assert.match(fs.readFileSync(path.join(ctrl, 'postrm'), 'utf8'), /purge/);
      for (const s of ['postinst', 'postrm', 'prerm']) await run('sh', ['-n', path.join(ctrl, s)]);
      // The licence texts of what the bundle holds: every package it bundles, each with its text.
      const docs = fs.mkdtempSync(path.join(out, 'docs-'));
      await run('dpkg-deb', ['-x', debs[role], docs], { maxBuffer: 16 << 20 });
      const licences = zlib.gunzipSync(fs.readFileSync(path.join(docs, `usr/share/doc/${pkg}/npm-packages.txt.gz`))).toString();
      const bundled = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'dist/cmd', `${pkg}.packages.json`), 'utf8')) as { name: string; version: string }[];
      for (const p of [...bundled.map((b) => b.name), 'commander', 'zod', ...(role === 'server' ? ['@peculiar/x509', 'prom-client'] : [])]) {
        assert.match(licences, new RegExp(`^${p.replace(/[/.]/g, '\\$&')} \\S+ \\(`, 'm'), `${p} listed in npm-packages.txt.gz`);
      }
      assert.match(licences, /Permission is hereby granted, free of charge/, 'MIT text');
      if (role === 'server') assert.match(licences, /Apache License/, 'Apache-2.0 text (prom-client)');
      assert.match(fs.readFileSync(path.join(docs, `usr/share/doc/${pkg}/copyright`), 'utf8'), /npm-packages\.txt\.gz/);
    });

    it(`${pkg}: the unit passes systemd-analyze verify and scores ≤ ${EXPOSURE_LIMIT[role]}; the packaged command runs`, async () => {
      const root = fs.mkdtempSync(path.join(out, `root-${role}-`));
      await run('dpkg-deb', ['-x', debs[role], root], { maxBuffer: 16 << 20 });
      const unit = path.join(root, 'lib/systemd/system', `${pkg}.service`);
      const text = fs.readFileSync(unit, 'utf8');
      assert.doesNotMatch(text, /^\s*MemoryDenyWriteExecute\s*=\s*(yes|true|on|1)\b/im, 'V8 needs W^X off');
      // The package's own files, on top of the system's units (targets) and /bin/kill (ExecReload).
      fs.cpSync('/lib/systemd/system', path.join(root, 'lib/systemd/system'), { recursive: true, force: false, errorOnExist: false, verbatimSymlinks: true });
      fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
      fs.copyFileSync('/bin/kill', path.join(root, 'bin/kill'));
      fs.chmodSync(path.join(root, 'bin/kill'), 0o755);
      const verify = await run('systemd-analyze', ['verify', `--root=${root}`, '--man=no', `/lib/systemd/system/${pkg}.service`]).catch((e: { stdout: string; stderr: string; code: number }) => e);
      assert.ok(!('code' in verify) || verify.code === 0, `${verify.stdout}${verify.stderr}`);
      assert.doesNotMatch(verify.stderr, new RegExp(`${pkg}\\.service:`), verify.stderr);
      const sec = await run('systemd-analyze', ['security', '--offline=true', unit]).catch((e: { stdout: string; stderr: string }) => e);
      const score = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(sec.stdout)?.[1]);
      assert.ok(score <= EXPOSURE_LIMIT[role], `exposure ${score} (limit ${EXPOSURE_LIMIT[role]})\n${sec.stdout.split('\n').filter((l) => l.startsWith('✗')).join('\n')}`);
      console.log(JSON.stringify({ unit: pkg, exposure: score }));
      const lib = path.join(root, 'usr/lib/nbackup', role);
      const help = await run(path.join(lib, 'node'), [path.join(lib, 'dist/cmd', `${pkg}.js`), '--help']);
      assert.match(help.stdout, /Exit status:/);
      if (role === 'agent') {
        const version = await run(path.join(lib, 'node'), [path.join(lib, 'dist/cmd', `${pkg}.js`), '--version']);
        assert.match(version.stdout, /igzip|isa-l/i, `the packaged addon is loaded: ${version.stdout}`);
      }
    });
  }

  it('bare Debian 12: apt-get install ./both.deb, --help, pki, and a backup over loopback', async (t) => {
    const mirror = process.env.NBACKUP_TEST_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
    const unreachable = await fetch(`${mirror}/dists/bookworm/Release`, { method: 'HEAD', signal: AbortSignal.timeout(15_000) })
      .then((r) => (r.ok ? null : `HTTP ${r.status}`), (e: Error) => e.message);
    if (unreachable) {
      t.skip(`this machine cannot reach Debian's packages at ${mirror} (${unreachable})`);
      return;
    }
    const script = path.join(REPO_ROOT, 'test/packaging/in-bare-debian.sh');
    const port = await freePort();
    const r = await run('mmdebstrap', [
      '--variant=minbase', `--mode=${process.getuid?.() === 0 ? 'root' : 'unshare'}`, '--quiet',
      `--customize-hook=copy-in ${debs.agent} ${debs.server} ${script} /tmp`,
      `--customize-hook=chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/${path.basename(debs.agent)} /tmp/${path.basename(debs.server)}`,
      // A clean environment, as under a fresh login: nothing of this machine's leaks in.
      `--customize-hook=chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PORT=${port} sh /tmp/${path.basename(script)}`,
      // The root is made in a temporary folder and thrown away (target /dev/null).
      'bookworm', '/dev/null', mirror,
    ], { timeout: 400_000, maxBuffer: 64 << 20 }).catch((e: { stdout: string; stderr: string; code: number }) => e);
    const output = `${r.stdout}\n${r.stderr}`;
    assert.ok(!('code' in r) || r.code === 0, output.slice(-8000));
    assert.match(output, /Setting up nbackup-agent /);
    assert.match(output, /Setting up nbackup-server /);
    assert.match(output, /compression: gzip levels 1-3 ISA-L/, 'the addon loads against the Debian libraries apt installed');
    assert.match(output, /nbackup 750 \/etc\/nbackup\/pki/, 'the server owns its PKI folder even when the agent package made it first');
    assert.match(output, /"msg":"backup committed"/);
    assert.match(output, /bare Debian 12: backup restored exactly/);
  });
});

/** A loopback port free at the time of asking. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

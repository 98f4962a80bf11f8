// Turns each compiled entry point dist/cmd/nbackup-*.js (run by `npm run build` after tsc) into one
// self-contained ES module holding our code and the npm packages it imports, in place. Node.js then
// starts either command without resolving and reading ~300 module files: measured on the benchmark
// machine, `nbackup-agent --version` 0.28 → 0.19 s of CPU, `nbackup-server --version` 0.60 → 0.26 s,
// a one-file backup 0.53 → 0.30 s (docs/design.md, "One file per command").
//
// The native addons stay outside (they are found from the package root, src/native/addons.ts).
// Next to each bundle goes <name>.packages.json: the npm packages inside it, with version, licence
// name and licence files, from which packaging/build-deb.sh ships their licence texts.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ENTRIES = ['nbackup-agent', 'nbackup-server'];
// ESM output has no `require`; CommonJS packages inside the bundle call it for Node's built-ins.
const BANNER = "import { createRequire as __nbackupCreateRequire } from 'node:module'; const require = __nbackupCreateRequire(import.meta.url);";

for (const name of ENTRIES) {
  const file = path.join(ROOT, 'dist/cmd', `${name}.js`);
  const result = await esbuild.build({
    entryPoints: [file],
    outfile: file,
    allowOverwrite: true,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Class and function names stay as written: errors and logs name them.
    keepNames: true,
    banner: { js: BANNER },
    // Chains tsc's maps, so a stack trace maps back to cmd/, src/ and protocol/ with --enable-source-maps.
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
  });
  const packages = new Map();
  for (const input of Object.keys(result.metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (!m || packages.has(m[1])) continue;
    const dir = path.join(ROOT, input.slice(0, m.index + m[0].length));
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    // The licence text, and any notice file it asks to be passed on (Apache-2.0 §4d).
    const files = fs.readdirSync(dir).filter((f) => /^(licen[cs]e|copying|notice|copyrightnotice)(\.(md|txt))?$/i.test(f)).sort();
    if (!files.some((f) => !/notice/i.test(f))) throw new Error(`bundle: ${m[1]} has no licence file; cannot ship it`);
    packages.set(m[1], { name: m[1], version: meta.version, license: meta.license, files: files.map((f) => path.relative(ROOT, path.join(dir, f))) });
  }
  // Bundling a bundle finds no packages (npm run build starts from tsc's output every time).
  if (packages.size === 0) throw new Error(`bundle: ${file} holds no npm package: it is a bundle already; run npm run build`);
  const list = [...packages.values()].sort((a, b) => a.name.localeCompare(b.name));
  fs.writeFileSync(path.join(ROOT, 'dist/cmd', `${name}.packages.json`), `${JSON.stringify(list, null, 2)}\n`);
}

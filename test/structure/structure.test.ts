import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { MAX_MODULE_LINES, checkStructure } from './imports.js';

/** The repository root: this file runs as dist/test/structure/structure.test.js. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

test('the repository keeps its layering: no import cycle, a pure protocol/, bench/ apart from test/, small modules', () => {
  const report = checkStructure(REPO);
  assert.deepEqual(report.cycles, [], `import cycles:\n${report.cycles.map((c) => c.join(' → ')).join('\n')}`);
  assert.deepEqual(report.forbidden, [], report.forbidden.join('\n'));
  assert.deepEqual(report.oversized, [], `modules over ${MAX_MODULE_LINES} lines: ${report.oversized.join(', ')}`);
});

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-structure-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function write(rel: string, text: string): void {
  fs.mkdirSync(path.dirname(path.join(scratch, rel)), { recursive: true });
  fs.writeFileSync(path.join(scratch, rel), text);
}

test('the checker finds a cycle, a protocol/ → src/ import, a bench/ → test/ import and a long module', () => {
  write('src/a.ts', "import { b } from './b.js';\nexport const a = b;\n");
  write('src/b.ts', "import type { C } from './sub/c.js';\nexport const b = 1;\n");
  write('src/sub/c.ts', "export type C = number;\nexport { a } from '../a.js';\n");
  write('src/ok.ts', "import { a } from './a.js';\nimport fs from 'node:fs';\nexport const ok = [a, fs];\n");
  write('protocol/p.ts', "import { NbackupError } from '../src/errors.js';\nexport { NbackupError };\n");
  write('bench/x.ts', "import { makePki } from '../test/helpers/pki.js';\nexport { makePki };\n");
  write('protocol/long.ts', 'export const x = 1;\n'.repeat(MAX_MODULE_LINES + 1));
  const report = checkStructure(scratch);
  assert.deepEqual(report.cycles, [['src/a.ts', 'src/b.ts', 'src/sub/c.ts']]);
  assert.deepEqual(report.forbidden, [
    'protocol/p.ts → src/errors.ts: protocol/ is the pure layer and imports only protocol/',
    'bench/x.ts → test/helpers/pki.ts: bench/ may not import test/',
  ]);
  assert.deepEqual(report.oversized, [`protocol/long.ts (${MAX_MODULE_LINES + 1} lines)`]);
});

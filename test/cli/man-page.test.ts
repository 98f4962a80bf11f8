/**
 * The man pages come from the commander programs behind `--help` and from the example configs:
 * every command, argument and option is in them, every config key, the signals and the exit
 * status table, and man(1) renders them without a groff warning.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { Command } from 'commander';
import { agentProgram } from '../../src/cli/agent-program.js';
import { serverProgram } from '../../src/cli/server-program.js';
import { writeManPages } from '../../src/cli/write-man.js';
import { EXIT_CODES } from '../../src/exit-codes.js';
import { REPO_ROOT } from '../helpers/proc.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbk-man-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const [agentPage, serverPage] = writeManPages(dir, '2026-01-01');

/** The page as man(1) shows it (plain text, ASCII hyphens), and groff's warnings. */
function render(file: string): { text: string; warnings: string } {
  const r = spawnSync('man', ['--warnings', '-E', 'ascii', '-l', file], { env: { ...process.env, MANWIDTH: '200', MANPAGER: 'cat', PAGER: 'cat' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { text: r.stdout.replace(/.\x08/g, ''), warnings: r.stderr };
}

function everyCommand(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(everyCommand)];
}

/** The keys of a YAML reference file: `key:` at the start of a line (after indentation or "- "). */
function configKeys(file: string): string[] {
  const keys = new Set<string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*(?:- )?([a-z_]+):/.exec(line);
    if (m) keys.add(m[1]);
  }
  return [...keys];
}

for (const [page, program, config, signals] of [
  [agentPage, agentProgram(), 'configs/agent.example.yaml', ['SIGHUP', 'SIGTERM']],
  [serverPage, serverProgram(), 'configs/server.example.yaml', ['SIGTERM', 'SIGUSR2']],
] as const) {
  test(`${path.basename(page)}: renders cleanly and covers every command, option, config key, signal and exit status`, () => {
    const { text, warnings } = render(page);
    assert.equal(warnings.trim(), '', 'no groff warnings');
    for (const cmd of everyCommand(program)) {
      if (cmd !== program) assert.ok(text.includes(cmd.description()), `the description of ${cmd.name()}`);
      for (const o of cmd.options) assert.ok(text.includes(o.flags), `${cmd.name()} ${o.flags}`);
      for (const a of cmd.registeredArguments) assert.ok(text.includes(a.description), `${cmd.name()} <${a.name()}>`);
    }
    const keys = configKeys(path.join(REPO_ROOT, config));
    assert.ok(keys.length > 20, `${keys.length} keys found in ${config}`);
    for (const k of keys) assert.ok(text.includes(`${k}:`), `config key ${k}`);
    for (const s of signals) assert.match(text, new RegExp(`^\\s*${s}`, 'm'));
    for (const e of EXIT_CODES) assert.ok(text.includes(e.meaning.slice(0, 40)), `exit status ${e.code}`);
    assert.match(text, /^NAME\n\s+nbackup-(agent|server) - /m);
  });
}

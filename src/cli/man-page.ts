import type { Command, Option } from 'commander';
import { EXIT_CODES } from '../exit-codes.js';

/**
 * Man pages in section 1, made from the same commander programs that print `--help` (every
 * command, subcommand, argument and option with its default), plus the sections `--help` has no
 * room for: signals, files, the configuration reference (the example file, which a test checks
 * carries every key) and the exit status table of exit-codes.ts. So the two cannot drift.
 */
export interface ManExtras {
  /** Paragraphs after the one-line description. */
  description: string[];
  signals: [signal: string, meaning: string][];
  files: [path: string, meaning: string][];
  /** Title and text of the configuration file reference (shown verbatim). */
  config: { file: string; text: string };
  seeAlso: string[];
}

/** Text made safe for roff: backslashes, and lines that would start a request. */
function esc(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function optionLine(o: Option): string[] {
  const def = o.defaultValue !== undefined && o.defaultValue !== false ? ` (default: ${String(o.defaultValue)})` : '';
  return ['.TP', `.B ${esc(o.flags)}`, esc(`${o.description}${def}`)];
}

function usageOf(cmd: Command, parents: string[]): string {
  return [...parents, cmd.name(), cmd.usage()].filter((s) => s !== '').join(' ');
}

/** One command's synopsis lines, then its subcommands', depth first. */
function synopses(cmd: Command, parents: string[] = []): string[] {
  const own = cmd.commands.length === 0 || (cmd as unknown as { _actionHandler: unknown })._actionHandler ? [usageOf(cmd, parents)] : [];
  return [...own, ...cmd.commands.flatMap((c) => synopses(c, [...parents, cmd.name()]))];
}

function commandSections(cmd: Command, parents: string[]): string[] {
  const out: string[] = [];
  for (const sub of cmd.commands) {
    const path = [...parents, sub.name()];
    out.push('.SS', `.B ${esc(usageOf(sub, parents))}`);
    out.push('.PP', esc(sub.description()));
    for (const a of sub.registeredArguments) out.push('.TP', `.I ${esc(a.name())}`, esc(a.description));
    for (const o of sub.options) out.push(...optionLine(o));
    out.push(...commandSections(sub, path));
  }
  return out;
}

export function renderManPage(program: Command, version: string, date: string, extras: ManExtras): string {
  const name = program.name();
  const lines: string[] = [
    `.TH ${name.toUpperCase()} 1 "${date}" "n-backup ${version}" "User Commands"`,
    '.SH NAME',
    `${name} \\- ${esc(program.description())}`,
    '.SH SYNOPSIS',
    ...synopses(program).flatMap((s) => ['.PP', `.B ${esc(s)}`]),
    '.SH DESCRIPTION',
    ...extras.description.flatMap((p) => ['.PP', esc(p)]),
    '.SH OPTIONS',
    ...program.options.flatMap(optionLine),
    '.TP',
    '.B \\-h, \\-\\-help',
    'display help for the command (every command and subcommand has it)',
  ];
  if (program.commands.length > 0) lines.push('.SH COMMANDS', ...commandSections(program, [name]));
  lines.push('.SH SIGNALS', ...extras.signals.flatMap(([s, m]) => ['.TP', `.B ${s}`, esc(m)]));
  lines.push('.SH FILES', ...extras.files.flatMap(([p, m]) => ['.TP', `.I ${esc(p)}`, esc(m)]));
  lines.push('.SH CONFIGURATION', '.PP', esc(`${extras.config.file}: every key, with its default where it has one.`), '.PP', '.nf', esc(extras.config.text.trimEnd()), '.fi');
  lines.push('.SH EXIT STATUS', ...EXIT_CODES.flatMap((e) => ['.TP', `.B ${e.code}`, esc(e.meaning)]));
  lines.push('.SH SEE ALSO', extras.seeAlso.map((s) => `.BR ${s.replace(/\((\d)\)$/, ' ($1)')}`).join(',\n'));
  return `${lines.join('\n')}\n`;
}

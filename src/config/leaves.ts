/**
 * The building blocks of the config schemas: leaves that read one YAML value and write their own
 * message ("expected a size between 64kb and 16mb, got \"32kb\""), and strict containers. load.ts
 * prefixes the file name and the key path.
 */
import path from 'node:path';
import { z } from 'zod';
import { CronExpressionParser } from 'cron-parser';
import { nameProblem } from '../../protocol/names.js';
import { MAX_DURATION_MS, formatBytes, formatDuration, parseDuration, parseSize } from './units.js';

// A config is parsed once or twice per process: zod's generated (eval'd) fast path costs more to
// build than it saves here (first parse of agent.yaml 46-60 ms with it, 28-46 ms without).
z.config({ jitless: true });

// ---------------------------------------------------------------------------------------------
// Messages

/** How a value found in a config file is named in a message. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return v.length === 0 ? 'an empty list' : 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

export function missing(expected: string): string {
  return `missing required key (expected ${expected})`;
}

export function wrong(expected: string, v: unknown, hint = ''): string {
  return `expected ${expected}, got ${describeValue(v)}${hint}`;
}

/** Returned by a leaf check to refuse a value with a message. */
class Invalid {
  constructor(readonly message: string) {}
}

/**
 * A leaf: any YAML value in, T out. A missing key is reported as missing (unless the leaf is
 * wrapped in .default()/.optional(), which never call it with undefined).
 */
function leaf<T>(expected: string, check: (v: unknown) => T | Invalid) {
  return z.unknown().transform((v, ctx): T => {
    if (v === undefined) {
      ctx.addIssue({ code: 'custom', message: missing(expected), input: v });
      return z.NEVER;
    }
    const out = check(v);
    if (out instanceof Invalid) {
      ctx.addIssue({ code: 'custom', message: out.message, input: v });
      return z.NEVER;
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Leaves

function str(expected = 'a string') {
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v, typeof v === 'number' ? ' (quote it)' : ''));
    return v;
  });
}

export function nonEmptyStr(expected: string) {
  return leaf(expected, (v) => {
    if (typeof v !== 'string' || v.trim() === '') return new Invalid(wrong(expected, v));
    return v;
  });
}

/** Agent, backup and storage names: they become folder names on the server. */
export function nameLeaf(what: string) {
  const expected = `a ${what} (a string usable as a folder name)`;
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v, typeof v === 'number' ? ' (quote it)' : ''));
    const problem = nameProblem(v);
    if (problem !== null) return new Invalid(`invalid ${what} ${JSON.stringify(v)}: it ${problem}`);
    return v;
  });
}

export function bool() {
  return leaf('true or false', (v) => (typeof v === 'boolean' ? v : new Invalid(wrong('true or false', v))));
}

export function int(min: number, max?: number) {
  const expected = max === undefined ? `an integer ≥ ${min}` : `an integer between ${min} and ${max}`;
  return leaf(expected, (v) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || (max !== undefined && v > max)) {
      return new Invalid(wrong(expected, v));
    }
    return v;
  });
}

export function oneOf<const T extends readonly string[]>(values: T) {
  const expected = `one of ${values.join(', ')}`;
  return leaf(expected, (v): T[number] | Invalid =>
    typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as T[number]) : new Invalid(wrong(expected, v)),
  );
}

/** A size: bytes as a whole number or a string like 256mb. Output: bytes. */
export function size(min: number, max?: number) {
  const expected =
    max !== undefined
      ? `a size between ${formatBytes(min)} and ${formatBytes(max)}`
      : min > 0
        ? `a size of at least ${formatBytes(min)}`
        : 'a size';
  return leaf(expected, (v) => {
    if (typeof v !== 'string' && typeof v !== 'number') return new Invalid(wrong(expected, v));
    let bytes: number;
    try {
      bytes = parseSize(v);
    } catch {
      return new Invalid(wrong(`${expected} (like 64kb, 256mb, 1gb)`, v));
    }
    if (bytes < min || (max !== undefined && bytes > max)) return new Invalid(wrong(expected, v));
    return bytes;
  });
}

/** A duration: a string like 30s, 5m, 1h30m, at most MAX_DURATION_MS (a timer holds no more). Output: milliseconds. */
export function duration(min: number) {
  const range = min > 0 ? `between ${formatDuration(min)} and ${formatDuration(MAX_DURATION_MS)}` : `of at most ${formatDuration(MAX_DURATION_MS)}`;
  const expected = `a duration ${range} (like 500ms, 30s, 5m, 1h30m)`;
  return leaf(expected, (v) => {
    if (typeof v === 'number') return new Invalid(wrong(expected, v, ' (a bare number is ambiguous: add a unit)'));
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch {
      const bare = /^\s*\d+(\.\d+)?\s*$/.test(v) ? ' (a bare number is ambiguous: add a unit)' : '';
      return new Invalid(wrong(expected, v, bare));
    }
    if (ms > MAX_DURATION_MS) return new Invalid(wrong(expected, v, ' (about 24.8 days is the longest a timer can wait)'));
    if (ms < min) return new Invalid(wrong(expected, v));
    return ms;
  });
}

function resolvePath(baseDir: string | undefined, p: string): string {
  return baseDir === undefined ? path.resolve(p) : path.resolve(baseDir, p);
}

/** A file or folder path; relative paths are relative to the config file's folder. `~` is not expanded. */
export function pathLeaf(baseDir: string | undefined, expected = 'a path') {
  return leaf(expected, (v) => {
    if (typeof v !== 'string' || v === '') return new Invalid(wrong(expected, v));
    if (v.includes('\0')) return new Invalid(`expected ${expected}, got a string containing NUL`);
    const resolved = resolvePath(baseDir, v);
    if (!path.isAbsolute(resolved)) return new Invalid(`expected ${expected} that resolves to an absolute path, got ${JSON.stringify(v)}`);
    return resolved;
  });
}

/** logging.file: "" means stdout/stderr, anything else is a path. */
function optionalPathLeaf(baseDir: string | undefined) {
  const expected = 'a path, or "" for standard output';
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    if (v === '') return '';
    if (v.includes('\0')) return new Invalid(`expected ${expected}, got a string containing NUL`);
    return resolvePath(baseDir, v);
  });
}

export interface HostPort {
  /** As written in the file, e.g. `backup.example.com:9847` or `[::1]:9847`. */
  address: string;
  /** Without brackets, ready for net.connect/listen: `backup.example.com`, `::1`. */
  host: string;
  port: number;
}

/** Parses `host:port` / `[v6]:port`. Returns null when the text is not of that form. */
export function parseHostPort(text: string, minPort = 1): HostPort | null {
  const m = /^(?:\[([^\]\s]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < minPort || port > 65535) return null;
  return { address: text, host: m[1] ?? m[2], port };
}

export function hostPort(minPort: number) {
  const expected = `host:port with a port between ${minPort} and 65535 (like backup.example.com:9847 or [::1]:9847)`;
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    return parseHostPort(v, minPort) ?? new Invalid(wrong(expected, v));
  });
}

/** A cron expression: 5 fields, or 6 with seconds first. */
export function cron() {
  const expected = 'a cron expression with 5 fields (minute hour day month weekday) or 6 with seconds first';
  return leaf(expected, (v) => {
    if (typeof v !== 'string') return new Invalid(wrong(expected, v));
    const fields = v.trim().split(/\s+/).filter((f) => f !== '');
    if (fields.length !== 5 && fields.length !== 6) {
      return new Invalid(wrong(expected, v, ` (${fields.length} field${fields.length === 1 ? '' : 's'})`));
    }
    try {
      CronExpressionParser.parse(fields.join(' '));
    } catch (err) {
      return new Invalid(wrong(expected, v, `: ${err instanceof Error ? err.message : String(err)}`));
    }
    return fields.join(' ');
  });
}

// ---------------------------------------------------------------------------------------------
// Containers

/** A strict mapping: unknown keys are errors. */
export function obj<S extends z.core.$ZodLooseShape>(shape: S, expectedWhat?: string) {
  const allowed = Object.keys(shape).join(', ');
  const expected = expectedWhat ?? `a mapping with keys ${allowed}`;
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') return `unknown key (allowed here: ${allowed})`;
      if (iss.input === undefined) return missing(expected);
      return wrong(expected, iss.input);
    },
  });
}

/** An optional mapping whose keys all have defaults; absent or empty (`logging:`) means all defaults. */
export function section<S extends z.core.$ZodLooseShape>(shape: S) {
  return z.preprocess((v) => (v === null ? undefined : v), obj(shape).prefault({} as z.input<ReturnType<typeof obj<S>>>));
}

export function list<T extends z.ZodType>(item: T, expected: string, min = 0) {
  return z
    .array(item, { error: (iss) => (iss.input === undefined ? missing(expected) : wrong(expected, iss.input)) })
    .min(min, { error: (iss) => wrong(`${expected} with at least ${min} entr${min === 1 ? 'y' : 'ies'}`, iss.input) });
}

// ---------------------------------------------------------------------------------------------
// Pieces shared by both files

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
const LOG_FORMATS = ['json', 'text'] as const;

export function loggingSection(baseDir: string | undefined) {
  return section({
    level: oneOf(LOG_LEVELS).default('info'),
    format: oneOf(LOG_FORMATS).default('json'),
    file: optionalPathLeaf(baseDir).default(''),
  });
}

/**
 * Reading agent.yaml / server.yaml: YAML → schema → the typed config the program runs on. Every
 * failure is a ConfigError whose message names the file, the key path and what was expected:
 *
 *   agent.yaml: backups[1].resume.chunk_size: expected a size between 64kb and 16mb, got "32kb"
 *
 * When a file has several problems they are all reported, one per line, in file order.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { NbackupError, errnoCode, errorMessage } from '../errors.js';
import { agentConfigSchema, serverConfigSchema, describeValue, type AgentConfig, type ServerConfig } from './schema.js';

export interface ConfigProblem {
  /** `backups[1].resume.chunk_size`, `storages.scripts.max_backups`; '' for the file as a whole. */
  keyPath: string;
  /** What is wrong, without the file and key path. */
  message: string;
  /** 1-based position in the file, when known. */
  line?: number;
  column?: number;
}

const MAX_REPORTED = 20;

export class ConfigError extends NbackupError {
  /** The config file as it was named by the caller. */
  readonly file: string;
  /** Key path of the first problem ('' when the problem is the file itself: missing, empty, bad YAML). */
  readonly keyPath: string;
  /** Every problem found, first one first. */
  readonly problems: readonly ConfigProblem[];

  constructor(file: string, problems: ConfigProblem[], options?: { cause?: unknown }) {
    const shown = problems.slice(0, MAX_REPORTED).map((p) => formatProblem(file, p));
    if (problems.length > MAX_REPORTED) shown.push(`${file}: … and ${problems.length - MAX_REPORTED} more problems`);
    super('config', shown.join('\n'), options);
    this.name = 'ConfigError';
    this.file = file;
    this.problems = problems;
    this.keyPath = problems[0]?.keyPath ?? '';
  }
}

function formatProblem(file: string, p: ConfigProblem): string {
  return p.keyPath === '' ? `${file}: ${p.message}` : `${file}: ${p.keyPath}: ${p.message}`;
}

/** `['backups', 1, 'resume', 'chunk_size']` → `backups[1].resume.chunk_size`. */
function formatKeyPath(keyPath: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of keyPath) {
    if (typeof seg === 'number') {
      out += `[${seg}]`;
    } else {
      const s = String(seg);
      if (/^[A-Za-z0-9_-]+$/.test(s)) out += out === '' ? s : `.${s}`;
      else out += `[${JSON.stringify(s)}]`;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/** Where a key path is in the file: the key itself, or (exact: false) the deepest part of it that exists. */
type Located = { line: number; column: number; offset: number; exact: boolean };
type ParsedYaml = { value: unknown; locate: (keyPath: readonly PropertyKey[]) => Located | undefined };

function parseYaml(text: string, file: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      // Only the first: later YAML errors are usually echoes of it.
      doc.errors.slice(0, 1).map((e) => {
        const pos = e.linePos?.[0];
        let what = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
        if (/alias/i.test(what)) what += ' (a value starting with "*", like a cron expression, must be quoted)';
        return pos
          ? { keyPath: '', message: `invalid YAML at line ${pos.line}, column ${pos.col}: ${what}`, line: pos.line, column: pos.col }
          : { keyPath: '', message: `invalid YAML: ${what}` };
      }),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    let what = errorMessage(err);
    if (/alias/i.test(what)) what += ' (a value starting with "*", like a cron expression, must be quoted)';
    throw new ConfigError(file, [{ keyPath: '', message: `invalid YAML: ${what}` }], { cause: err });
  }

  const locate = (keyPath: readonly PropertyKey[]): Located | undefined => {
    let node: unknown = doc.contents;
    let offset: number | undefined = isNode(node) ? node.range?.[0] : undefined;
    let depth = 0;
    for (const seg of keyPath) {
      if (isMap(node)) {
        const pair = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
        if (!pair) break;
        if (isNode(pair.key) && pair.key.range) offset = pair.key.range[0];
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg];
        if (!isNode(item)) break;
        if (item.range) offset = item.range[0];
        node = item;
      } else {
        break;
      }
      depth++;
    }
    if (offset === undefined) return undefined;
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col, offset, exact: depth === keyPath.length };
  };
  return { value, locate };
}

function parseWith<S extends z.ZodType>(schema: S, text: string, file: string, expected: string): z.output<S> {
  const { value, locate } = parseYaml(text, file);
  if (value === undefined || value === null) {
    throw new ConfigError(file, [{ keyPath: '', message: `the file is empty (expected a mapping with ${expected})` }]);
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(file, [{ keyPath: '', message: `expected a mapping with ${expected} at the top level, got ${describeValue(value)}` }]);
  }
  const result = schema.safeParse(value);
  if (result.success) return result.data;

  const found: (ConfigProblem & { offset: number; order: number })[] = [];
  const add = (keyPath: readonly PropertyKey[], message: string) => {
    const pos = locate(keyPath);
    found.push({
      keyPath: formatKeyPath(keyPath),
      message,
      ...(pos?.exact ? { line: pos.line, column: pos.column } : {}),
      offset: pos?.offset ?? Number.MAX_SAFE_INTEGER,
      order: found.length,
    });
  };
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) add([...issue.path, key], issue.message);
    } else {
      add(issue.path, issue.message);
    }
  }
  found.sort((a, b) => a.offset - b.offset || a.order - b.order);
  throw new ConfigError(
    file,
    found.map(({ offset: _o, order: _r, ...p }) => p),
  );
}

function configDir(file: string): string {
  return path.dirname(path.resolve(file));
}

/** Schemas depend on the config folder (relative paths); building one costs more than using it. */
function memo<T>(build: (dir: string) => T): (dir: string) => T {
  const cache = new Map<string, T>();
  return (dir) => {
    let schema = cache.get(dir);
    if (schema === undefined) {
      if (cache.size >= 16) cache.clear();
      schema = build(dir);
      cache.set(dir, schema);
    }
    return schema;
  };
}
const agentSchemaFor = memo(agentConfigSchema);
const serverSchemaFor = memo(serverConfigSchema);

/** Parse agent.yaml text. `file` names the file in messages; relative paths resolve against its folder. */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  return parseWith(agentSchemaFor(configDir(file)), text, file, 'agent, server, tls and backups');
}

/** Parse server.yaml text. `file` names the file in messages; relative paths resolve against its folder. */
export function parseServerConfig(text: string, file: string): ServerConfig {
  return parseWith(serverSchemaFor(configDir(file)), text, file, 'server, tls and storages');
}

async function readConfigFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    const message =
      code === 'ENOENT'
        ? `config file not found (${path.resolve(file)})`
        : code === 'EACCES' || code === 'EPERM'
          ? 'cannot read config file: permission denied'
          : code === 'EISDIR'
            ? 'is a folder, not a config file'
            : `cannot read config file: ${errorMessage(err)}`;
    throw new ConfigError(file, [{ keyPath: '', message }], { cause: err });
  }
}

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  return parseAgentConfig(await readConfigFile(file), file);
}

export async function loadServerConfig(file: string): Promise<ServerConfig> {
  return parseServerConfig(await readConfigFile(file), file);
}

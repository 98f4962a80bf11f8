/**
 * The layering rules of the repository, checked from the import statements of the source files:
 * no import cycle in src/ or protocol/, protocol/ (the pure wire layer) imports nothing from
 * src/, bench/ does not import test/, and no module under src/ or protocol/ is over 350 lines.
 */
import fs from 'node:fs';
import path from 'node:path';

export const MAX_MODULE_LINES = 350;

export interface StructureReport {
  /** Each cycle as the list of files on it, starting from its alphabetically first file. */
  cycles: string[][];
  /** `from → to` imports that break a layering rule, with the rule. */
  forbidden: string[];
  /** Modules over MAX_MODULE_LINES lines: `file (n lines)`. */
  oversized: string[];
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Every .ts file under `dir` (relative to `root`), sorted. */
function tsFiles(root: string, dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    const abs = path.join(root, rel);
    if (!fs.existsSync(abs)) return;
    for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
      const child = path.join(rel, e.name);
      if (e.isDirectory()) walk(child);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(child.split(path.sep).join('/'));
    }
  };
  walk(dir);
  return out.sort();
}

/** The repository-relative .ts files a file imports (relative specifiers only; `.js` means `.ts`). */
export function importsOf(root: string, file: string): string[] {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    out.push(target);
  }
  return out;
}

/** Strongly connected components of more than one file (or a file importing itself): Tarjan. */
function cyclesIn(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}

export function checkStructure(root: string): StructureReport {
  const layered = [...tsFiles(root, 'src'), ...tsFiles(root, 'protocol')];
  const graph = new Map(layered.map((f) => [f, importsOf(root, f)]));
  const forbidden: string[] = [];
  for (const [from, targets] of graph) {
    for (const to of targets) {
      if (from.startsWith('protocol/') && !to.startsWith('protocol/')) forbidden.push(`${from} → ${to}: protocol/ is the pure layer and imports only protocol/`);
    }
  }
  for (const from of tsFiles(root, 'bench')) {
    for (const to of importsOf(root, from)) {
      if (to.startsWith('test/')) forbidden.push(`${from} → ${to}: bench/ may not import test/`);
    }
  }
  const oversized: string[] = [];
  for (const f of layered) {
    const lines = fs.readFileSync(path.join(root, f), 'utf8').split('\n').length - 1;
    if (lines > MAX_MODULE_LINES) oversized.push(`${f} (${lines} lines)`);
  }
  return { cycles: cyclesIn(graph), forbidden, oversized };
}

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Loads our N-API addons (built from src/native/ by `npm ci` through binding.gyp). Each is
 * optional: a missing or unloadable addon is reported once, with why, and the caller falls back
 * to plain Node.
 */

/**
 * Repository (or installed package) root: the nearest folder above this module that holds a
 * package.json. This module runs as dist/src/native/addons.js or inside a bundled entry point,
 * dist/cmd/nbackup-*.js (packaging/bundle.mjs), one level higher.
 */
const PACKAGE_ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 4; depth++) {
    if (existsSync(path.join(dir, 'package.json'))) return dir + path.sep;
    dir = path.dirname(dir);
  }
  return fileURLToPath(new URL('../../../', import.meta.url));
})();

/**
 * Where the addons are: `build/Release/` of the package, or `NBACKUP_ADDON_DIR` when set (the
 * packages install them elsewhere; a test points it at an empty folder to run without them).
 */
export function addonPath(name: string): string {
  const dir = process.env.NBACKUP_ADDON_DIR || `${PACKAGE_ROOT}build/Release`;
  return `${dir}/${name}.node`;
}

const loaded = new Map<string, { addon: unknown; problem: string }>();

/** The addon `name` (`build/Release/<name>.node`), or null with `addonProblem(name)` saying why. */
export function loadAddon<T>(name: string): T | null {
  let entry = loaded.get(name);
  if (!entry) {
    const file = addonPath(name);
    if (!existsSync(file)) {
      entry = { addon: null, problem: `${file} was not built (npm ci runs node-gyp; it needs python3, make, a C compiler, pkg-config and the -dev packages)` };
    } else {
      try {
        entry = { addon: createRequire(import.meta.url)(file), problem: '' };
      } catch (err) {
        entry = { addon: null, problem: `${file} could not be loaded: ${(err as Error).message}` };
      }
    }
    loaded.set(name, entry);
  }
  return entry.addon as T | null;
}

export function addonProblem(name: string): string {
  return loaded.get(name)?.problem ?? '';
}

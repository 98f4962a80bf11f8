import fs from 'node:fs';
import path from 'node:path';
import { backupFolders, removeArchive } from './catalog.js';
import { selectStorages } from './storage-selection.js';
import { OddEntries, OddEntryError } from './storage-entries.js';

/**
 * `nbackup-server retention [--dry-run] [--storage S] [--agent A]`: applies each storage's `keep`
 * policy now (the server applies it after every commit), one line per archive: kept and why, or
 * deleted. With --dry-run nothing is deleted.
 */
export async function runRetention(configPath: string, o: { dryRun: boolean; storage?: string; agent?: string }): Promise<number> {
  const storages = await selectStorages(configPath, o);
  let deleted = 0;
  const odd = new OddEntries();
  for (const s of storages) {
    for (const { agent: a, backup: b, dir } of await backupFolders(s, o.agent, undefined, odd)) {
      const decisions = await s.retention(dir, odd);
      if (decisions.length === 0) continue;
      const policy = Object.entries(s.config.keep).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
      process.stdout.write(`${s.name}/${a}/${b} (keep ${policy}):\n`);
      for (const d of decisions) {
        if (d.keep) {
          process.stdout.write(`  keep    ${d.name}  (${d.reasons.join(', ')})\n`);
        } else {
          try {
            if (!o.dryRun) await removeArchive(path.join(dir, d.name));
          } catch (err) {
            if (!(err instanceof OddEntryError)) throw err;
            odd.addError(err);
            continue;
          }
          deleted++;
          process.stdout.write(`  ${o.dryRun ? 'would delete' : 'deleted'} ${d.name}  (no rule keeps it)\n`);
        }
      }
      if (!o.dryRun && decisions.some((d) => !d.keep)) {
        const dh = await fs.promises.open(dir, 'r');
        await dh.sync().finally(() => dh.close());
      }
    }
  }
  // Symlinked folders and things named like archives that are not: never followed, never deleted.
  for (const i of odd.items) process.stdout.write(`skipped ${i.path}  (${i.why})\n`);
  if (odd.count > odd.items.length) process.stdout.write(`skipped … and ${odd.count - odd.items.length} more\n`);
  process.stdout.write(`${deleted} archive${deleted === 1 ? '' : 's'} ${o.dryRun ? 'would be deleted (dry run)' : 'deleted'}\n`);
  return 0;
}

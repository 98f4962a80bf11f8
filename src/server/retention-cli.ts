import fs from 'node:fs';
import path from 'node:path';
import { backupFolders, removeArchive } from './catalog.js';
import { selectStorages } from './storage-selection.js';

/**
 * `nbackup-server retention [--dry-run] [--storage S] [--agent A]`: applies each storage's `keep`
 * policy now (the server applies it after every commit), one line per archive: kept and why, or
 * deleted. With --dry-run nothing is deleted.
 */
export async function runRetention(configPath: string, o: { dryRun: boolean; storage?: string; agent?: string }): Promise<number> {
  const storages = await selectStorages(configPath, o);
  let deleted = 0;
  for (const s of storages) {
    for (const { agent: a, backup: b, dir } of await backupFolders(s, o.agent)) {
      const decisions = await s.retention(dir);
      if (decisions.length === 0) continue;
      const policy = Object.entries(s.config.keep).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
      process.stdout.write(`${s.name}/${a}/${b} (keep ${policy}):\n`);
      for (const d of decisions) {
        if (d.keep) {
          process.stdout.write(`  keep    ${d.name}  (${d.reasons.join(', ')})\n`);
        } else {
          if (!o.dryRun) await removeArchive(path.join(dir, d.name));
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
  process.stdout.write(`${deleted} archive${deleted === 1 ? '' : 's'} ${o.dryRun ? 'would be deleted (dry run)' : 'deleted'}\n`);
  return 0;
}

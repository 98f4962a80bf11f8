import { nameProblem } from '../../protocol/names.js';
import { loadServerConfig } from '../config/index.js';
import { NbackupError } from '../errors.js';
import { Storage } from './storage.js';

/** The storages an offline command (verify, retention) works on: all, or the one `--storage` names. */
export async function selectStorages(configPath: string, o: { storage?: string; agent?: string }): Promise<Storage[]> {
  const config = await loadServerConfig(configPath);
  const all = Object.entries(config.storages).map(([name, sc]) => new Storage(name, sc));
  const storages = o.storage ? all.filter((s) => s.name === o.storage) : all;
  if (storages.length === 0) throw new NbackupError('usage', `no storage named "${o.storage}" in ${configPath}`);
  if (o.agent && nameProblem(o.agent)) throw new NbackupError('usage', `agent name ${JSON.stringify(o.agent)} ${nameProblem(o.agent)}`);
  return storages;
}

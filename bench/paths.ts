/** Where the repository and the compiled CLIs are. The bench runs compiled, from dist/bench/*.js. */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const SERVER_BIN = join(REPO_ROOT, 'dist', 'cmd', 'nbackup-server.js');
export const AGENT_BIN = join(REPO_ROOT, 'dist', 'cmd', 'nbackup-agent.js');

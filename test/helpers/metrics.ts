import assert from 'node:assert/strict';

/** One sample's value from Prometheus text: `name{labels} value`, labels in the order given. */
export function sample(text: string, name: string, labels = ''): number {
  const prefix = labels === '' ? `${name} ` : `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  assert.ok(line, `no sample ${prefix.trim()} in:\n${text.split('\n').filter((l) => l.startsWith('nbackup_') && !l.startsWith('nbackup_server_')).join('\n')}`);
  return Number(line.slice(prefix.length));
}

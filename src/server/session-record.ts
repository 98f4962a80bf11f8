import fs from 'node:fs';
import type { ArchiveFormat } from '../config/index.js';
import { errorMessage } from '../errors.js';
import { readSmallRegular, SAFE_OPEN } from './storage-entries.js';

/**
 * What a session needs to outlive the server process, in a small JSON file beside its temporary
 * file: who it belongs to and how it is sent, so that a restarted server can take it up again
 * (adoption.ts). The bytes themselves are in the temporary file (and, for a parallel session, in
 * its staging file and chunk journal). A committed session leaves none of these behind.
 *
 * Every file of a session ends in `.tmp`: whatever a start-up does not take up is swept.
 */
export interface SessionRecord {
  format: 1;
  id: string;
  agent: string;
  storage: string;
  backup: string;
  mode: 'single' | 'parallel';
  /** The protocol version of the agent that opened it. */
  version: number;
  /** The archive format (gzip when absent). */
  archive?: ArchiveFormat;
  maxStreams?: number;
  chunkSize?: number;
  /**
   * Written just before the commit links the archive into place: what was verified. A restarted
   * server that finds it knows the commit may have happened (interrupted-commit.ts).
   */
  committing?: { size: number; sha256: string };
}

/** The files of one session, from its temporary file's path (`.<id>.tar.gz.tmp` or `.tar.zst.tmp`). */
export function sessionFiles(tempPath: string): { temp: string; staging: string; journal: string; record: string } {
  const base = tempPath.replace(/\.tar\.(gz|zst)\.tmp$/, '');
  return { temp: tempPath, staging: `${base}.staging.tmp`, journal: `${base}.chunks.tmp`, record: `${base}.session.tmp` };
}

/** Written whole or not at all: a new file, fsynced, renamed over the old one. The caller fsyncs the folder. */
export async function writeRecord(path: string, record: SessionRecord): Promise<void> {
  const next = path.replace(/\.tmp$/, '.new.tmp');
  const fh = await fs.promises.open(next, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | SAFE_OPEN, 0o600);
  try {
    await fh.writeFile(JSON.stringify(record) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(next, path);
}

/** A record is a few hundred bytes; a larger file under a record's name is not one. */
const RECORD_LIMIT = 64 * 1024;

/** The record at `path`, or why it cannot be used (a symlink, a FIFO, a folder: not followed nor waited on). */
export async function readRecord(path: string): Promise<SessionRecord | string> {
  let value: unknown;
  try {
    value = JSON.parse((await readSmallRegular(path, RECORD_LIMIT)).toString('utf8'));
  } catch (err) {
    return `unreadable session record: ${errorMessage(err)}`;
  }
  const r = value as Partial<SessionRecord>;
  const ok =
    r !== null &&
    typeof r === 'object' &&
    r.format === 1 &&
    [r.id, r.agent, r.storage, r.backup].every((v) => typeof v === 'string' && v !== '') &&
    (r.mode === 'single' || r.mode === 'parallel') &&
    typeof r.version === 'number' &&
    (r.archive === undefined || r.archive === 'gzip' || r.archive === 'zstd') &&
    (r.committing === undefined ||
      (typeof r.committing === 'object' && r.committing !== null && Number.isSafeInteger(r.committing.size) && r.committing.size >= 0 && /^[0-9a-f]{64}$/.test(String(r.committing.sha256))));
  return ok ? (r as SessionRecord) : 'malformed session record';
}

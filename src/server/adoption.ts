import fs from 'node:fs';
import path from 'node:path';
import { CHUNK_HEADER_SIZE } from '../../protocol/constants.js';
import { errorMessage } from '../errors.js';
import { ARCHIVE_EXTENSION } from '../archive/names.js';
import { BodyReceiver } from './body-receiver.js';
import { ChunkAssembler, type AssemblerState } from './chunk-assembler.js';
import { ChunkJournal, type ChunkRecord } from './chunk-journal.js';
import { ChunkStreams } from './chunk-stream-receiver.js';
import type { ServerContext } from './context.js';
import { hashPrefix } from './file-io.js';
import { openRegularFd } from './storage-entries.js';
import { finishInterruptedCommit } from './interrupted-commit.js';
import { parallelSession, sessionContext, singleSession, type Session } from './session.js';
import { readRecord, sessionFiles, type SessionRecord } from './session-record.js';
import type { Storage } from './storage.js';

/**
 * A restarted server takes up the sessions its predecessor left, whether it was stopped or
 * killed: each session record younger than `session_ttl` comes back, its bytes read once to
 * rebuild the hash, detached and waiting for its agent to resume (RSME) or re-join (PJIN) from
 * what is on disk. A session its predecessor was committing is finished instead (interrupted-commit.ts).
 * Returns the files taken up; the start-up sweep removes every other `.tmp` file.
 */
export async function adoptSessions(ctx: ServerContext): Promise<Set<string>> {
  const kept = new Set<string>();
  for (const storage of ctx.storages.values()) {
    for (const recordPath of (await storage.tempFiles()).filter((f) => f.endsWith('.session.tmp'))) {
      try {
        await adoptOne(ctx, storage, recordPath, kept);
      } catch (err) {
        ctx.log.warn({ storage: storage.name, file: recordPath, err: errorMessage(err) }, 'a session left by the previous server cannot be taken up; its files are removed');
      }
    }
  }
  return kept;
}

async function adoptOne(ctx: ServerContext, storage: Storage, recordPath: string, kept: Set<string>): Promise<void> {
  const ttl = ctx.config.server.session_ttl;
  const record = await readRecord(recordPath);
  if (typeof record === 'string') throw new Error(record);
  const format = record.archive ?? 'gzip';
  const files = sessionFiles(recordPath.replace(/\.session\.tmp$/, `.${ARCHIVE_EXTENSION[format]}.tmp`));
  if (record.storage !== storage.name || path.dirname(files.temp) !== storage.backupDir(record.agent, record.backup)) {
    throw new Error('the record does not belong where it lies');
  }
  if (record.committing && (await finishInterruptedCommit(ctx, storage, { ...record, committing: record.committing }, files))) return;
  // Opened, never followed: a temporary name planted as a symlink must not be read, cut or appended to.
  const fd = await openRegularFd(files.temp, fs.constants.O_RDWR);
  const st = fs.fstatSync(fd);
  const age = Date.now() - st.mtimeMs;
  if (age >= ttl) {
    fs.closeSync(fd);
    return;
  }
  const temp = { path: files.temp, fd };
  const who = { id: record.id, agent: record.agent, storage, backup: record.backup, temp, version: record.version, format };
  let session: Session;
  try {
    if (record.mode === 'single') {
      session = singleSession(who, await BodyReceiver.adopt(fd, st.size, storage.space));
    } else {
      session = parallelSession(who, await adoptChunks(record, fd, files, storage));
    }
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  ctx.registry.adopt(session, ttl - age);
  for (const f of Object.values(files)) kept.add(f);
  ctx.log.info({ ...sessionContext(session), mode: record.mode, ttlLeftS: Math.round((ttl - age) / 1000) }, 'session taken up after a restart; waiting for its agent');
}

/**
 * A parallel session from its journal: the chunks in the file (0 .. n-1, contiguous) and their
 * hash, the staged ones waiting for their turn, and each stream's offset (its stored chunks, in
 * stream order, without a gap).
 */
async function adoptChunks(record: SessionRecord, fd: number, files: ReturnType<typeof sessionFiles>, storage: Storage): Promise<ChunkStreams> {
  const records = (await exists(files.journal)) ? await ChunkJournal.read(files.journal) : [];
  const inFile = new Map<number, ChunkRecord>();
  const staged = new Map<number, ChunkRecord>();
  for (const r of records) (r.where === 'file' ? inFile : staged).set(r.seq, r);
  let nextSeq = 0;
  let written = 0;
  for (let r = inFile.get(0); r && r.at === written; r = inFile.get(nextSeq)) {
    written += r.length;
    nextSeq++;
  }
  // Anything appended after the last recorded chunk was never acknowledged: cut it off.
  await new Promise<void>((resolve, reject) => fs.ftruncate(fd, written, (err) => (err ? reject(err) : resolve())));
  const stagingSize = (await exists(files.staging)) ? (await fs.promises.lstat(files.staging)).size : 0;
  const waiting = [...staged.values()].filter((r) => r.seq >= nextSeq && r.at + r.length <= stagingSize);
  const state: AssemblerState = {
    written,
    nextSeq,
    hash: await hashPrefix(fd, written),
    staged: waiting.map((r) => ({ seq: r.seq, length: r.length, at: r.at, origin: { stream: r.stream, streamStart: r.streamStart } })),
  };
  const journal = await ChunkJournal.reopen(files.journal);
  const assembler = new ChunkAssembler(fd, files.staging, storage.config.assembler_pending_mem_limit, storage.space, journal);
  await assembler.restore(state);
  const streams = new ChunkStreams(record.maxStreams ?? 1, record.chunkSize ?? 0, assembler);
  const stored = [...[...inFile.values()].filter((r) => r.seq < nextSeq), ...waiting];
  for (const [index, chunks] of groupBy(stored, (r) => r.stream)) {
    chunks.sort((a, b) => a.streamStart - b.streamStart);
    let offset = 0;
    let last = -1;
    for (const c of chunks) {
      if (c.streamStart !== offset) break;
      offset += CHUNK_HEADER_SIZE + c.length;
      last = c.seq;
    }
    const s = streams.stream(index);
    s.bytes = offset;
    if (last >= 0) s.recovered = { chunkSeq: last, offset };
  }
  return streams;
}

/** Whether anything (a symlink too) has this name: what it is, its opening says. */
async function exists(p: string): Promise<boolean> {
  return fs.promises.lstat(p).then(() => true, () => false);
}

function groupBy<T>(items: T[], key: (t: T) => number): Map<number, T[]> {
  const out = new Map<number, T[]>();
  for (const i of items) {
    const k = key(i);
    const list = out.get(k);
    if (list) list.push(i);
    else out.set(k, [i]);
  }
  return out;
}

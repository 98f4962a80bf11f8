import type tls from 'node:tls';
import { AckStatus, isSupportedVersion } from '../../protocol/constants.js';
import type { Handshake } from '../../protocol/frames.js';
import { nameProblem } from '../../protocol/names.js';
import { ARCHIVE_FORMATS, type ArchiveFormat } from '../config/index.js';
import { errorMessage } from '../errors.js';
import { peerName, type ServerContext } from './context.js';
import type { Claim } from './registry.js';
import { sessionKey } from './session.js';
import type { Storage } from './storage.js';

/**
 * Who may start a backup, checked in this order: a protocol version we speak, names that are safe
 * path components, an agent name equal to the certificate's CN, an archive format we write
 * (gzip, or zstd from version 3), a configured storage, free space
 * above the storage's reserve, no running backup of the same agent/storage/backup, and a free
 * slot under max_concurrent_sessions (control/admission-gate.ts).
 */
export type Admission =
  | { ok: true; storage: Storage; claim: Claim; format: ArchiveFormat }
  | { ok: false; status: AckStatus; message: string };

export async function admit(ctx: ServerContext, socket: tls.TLSSocket, hs: Handshake): Promise<Admission> {
  const refuse = (status: AckStatus, message: string): Admission => ({ ok: false, status, message });
  if (!isSupportedVersion(hs.version)) return refuse(AckStatus.REJECT, `unsupported protocol version ${hs.version}`);
  for (const [what, value] of [
    ['agent', hs.agent],
    ['storage', hs.storage],
    ['backup', hs.backup],
  ] as const) {
    const problem = nameProblem(value);
    if (problem) return refuse(AckStatus.REJECT, `${what} name ${problem}`);
  }
  const certName = peerName(socket);
  if (certName !== hs.agent) {
    return refuse(AckStatus.REJECT, `agent name "${hs.agent}" does not match certificate CN "${certName ?? ''}"`);
  }
  const format = hs.format ?? 'gzip';
  if (!isArchiveFormat(format)) return refuse(AckStatus.REJECT, `unknown archive format "${format}" (expected ${ARCHIVE_FORMATS.join(' or ')})`);
  const storage = ctx.storages.get(hs.storage);
  if (!storage) return refuse(AckStatus.STORAGE_NOT_FOUND, `storage "${hs.storage}" is not configured`);
  let free: number;
  try {
    free = await storage.freeBytes();
  } catch (err) {
    return refuse(AckStatus.STORAGE_UNAVAILABLE, `storage "${storage.name}" cannot be used: ${errorMessage(err)}`);
  }
  if (free < storage.config.min_free) {
    return refuse(AckStatus.FULL, `storage "${storage.name}" has ${free} bytes free, below its reserve of ${storage.config.min_free}`);
  }
  const key = sessionKey(hs.agent, hs.storage, hs.backup);
  const claim = await ctx.registry.claim(key);
  if (!claim) return refuse(AckStatus.BUSY, `a backup of ${key} is already running`);
  if (!ctx.gate.tryEnter(hs.agent, key)) {
    claim.release();
    return refuse(AckStatus.WAIT, `the server is receiving ${ctx.gate.inUse} backups, its max_concurrent_sessions; wait for admission`);
  }
  return { ok: true, storage, claim, format };
}

function isArchiveFormat(f: string): f is ArchiveFormat {
  return (ARCHIVE_FORMATS as readonly string[]).includes(f);
}

/** A handshake admitted but not completed: its key and its admission slot are given back. */
export function abandonAdmission(ctx: ServerContext, claim: Claim): void {
  claim.release();
  ctx.gate.leave(claim.key);
}

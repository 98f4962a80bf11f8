import { PassThrough, type Readable } from 'node:stream';
import { ReadStatus, ReadTarget, statusName } from '../../../protocol/constants.js';
import {
  decodeArchiveInfo,
  decodeListHead,
  decodeReadHead,
  encodeListRequest,
  encodeReadRequest,
  type ArchiveInfo,
} from '../../../protocol/frames.js';
import { NbackupError } from '../../errors.js';
import { FrameSocket } from '../../net/frame-socket.js';
import { connectServer } from '../../net/connect-server.js';
import type { TlsMaterial } from '../../tls/material.js';

/** Where and as whom the read side connects. */
export interface ReadEndpoint {
  server: { host: string; port: number };
  material: TlsMaterial;
  agent: string;
  timeoutMs: number;
}

/** How an archive is named in messages: `storage/backup/name`, as the server keeps it. */
export function archivePath(a: Pick<ArchiveInfo, 'storage' | 'backup' | 'name'>): string {
  return `${a.storage}/${a.backup}/${a.name}`;
}

function refused(what: string, status: ReadStatus, message: string): NbackupError {
  return new NbackupError(status === ReadStatus.NOT_FOUND ? 'source' : 'rejected', `${what}: ${statusName(ReadStatus, status)}: ${message}`);
}

/** The agent's archives on the server, per storage and backup, oldest first ('' = every backup). */
export async function listRemote(ep: ReadEndpoint, backup: string): Promise<ArchiveInfo[]> {
  const socket = await connectServer(ep.server, ep.material, ep.timeoutMs);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeListRequest({ agent: ep.agent, backup }));
    const head = await frames.read(decodeListHead, ep.timeoutMs, 'list answer');
    if (head.status !== ReadStatus.OK) throw refused('list', head.status, head.message);
    const out: ArchiveInfo[] = [];
    for (let i = 0; i < head.count; i++) out.push(await frames.read(decodeArchiveInfo, ep.timeoutMs, 'list answer'));
    return out;
  } finally {
    socket.destroy();
  }
}

export interface RemoteRange {
  /** Bytes the stream will carry. */
  length: number;
  /** The bytes; errors if the connection ends before `length` of them came. */
  stream: Readable;
}

/** Opens a byte range of an archive (or its index); `length` 0 reads to the end. */
export async function readRemote(
  ep: ReadEndpoint,
  a: Pick<ArchiveInfo, 'storage' | 'backup' | 'name'>,
  target: ReadTarget,
  offset = 0,
  length = 0,
): Promise<RemoteRange> {
  const socket = await connectServer(ep.server, ep.material, ep.timeoutMs);
  const what = `${archivePath(a)}${target === ReadTarget.INDEX ? ' (index)' : ''}`;
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeReadRequest({ agent: ep.agent, storage: a.storage, backup: a.backup, name: a.name, target, offset, length }));
    const head = await frames.read(decodeReadHead, ep.timeoutMs, 'read answer');
    if (head.status !== ReadStatus.OK) throw refused(`read ${what}`, head.status, head.message);
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    let got = 0;
    const early = frames.detach();
    const take = (chunk: Buffer): boolean => {
      got += chunk.length;
      if (got > head.length) {
        out.destroy(new NbackupError('protocol', `read ${what}: the server sent more than the ${head.length} bytes it announced`));
        socket.destroy();
        return false;
      }
      return out.write(chunk);
    };
    const finish = (): void => {
      if (got === head.length) out.end();
      else out.destroy(new NbackupError('network', `read ${what}: the connection ended after ${got} of ${head.length} bytes`));
    };
    if (early.bytes.length > 0) take(early.bytes);
    if (early.peerEnded || socket.destroyed) finish();
    else {
      socket.on('data', (chunk: Buffer) => {
        if (!take(chunk)) socket.pause();
      });
      // The FrameSocket may have left it paused (it held a frame reader's worth of bytes).
      socket.resume();
      out.on('drain', () => socket.resume());
      socket.once('end', finish);
      socket.once('close', finish);
      socket.on('error', () => undefined);
      socket.setTimeout(ep.timeoutMs, () => {
        out.destroy(new NbackupError('timeout', `read ${what}: nothing received for ${Math.round(ep.timeoutMs / 1000)}s`));
        socket.destroy();
      });
    }
    out.on('close', () => socket.destroy());
    return { length: head.length, stream: out };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

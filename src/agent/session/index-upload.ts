import { ReadStatus, statusName } from '../../../protocol/constants.js';
import { decodeIndexAck, encodeIndexPut } from '../../../protocol/frames.js';
import { NbackupError } from '../../errors.js';
import { FrameSocket, writeWithBackpressure } from '../../net/frame-socket.js';
import { connectServer } from '../../net/connect-server.js';
import type { BackupContext } from './context.js';

/**
 * Sends a committed archive's index (IDXP, protocol v5) and waits for the server to store it. The
 * archive is safe whatever happens here: a failure only means a restore of it reads it whole.
 */
export async function uploadIndex(ctx: BackupContext, sessionId: string, parts: readonly Buffer[]): Promise<number> {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const socket = await connectServer(ctx.config.server, ctx.material, ctx.config.retry.connect_timeout);
  try {
    const frames = new FrameSocket(socket);
    socket.write(encodeIndexPut({ sessionId, length }));
    for (const p of parts) await writeWithBackpressure(socket, p);
    const ack = await frames.read(decodeIndexAck, ctx.config.retry.read_timeout, 'index answer');
    if (ack.status !== ReadStatus.OK) throw new NbackupError('rejected', `${statusName(ReadStatus, ack.status)}: ${ack.message}`);
    return length;
  } finally {
    socket.destroy();
  }
}

import { AbortStatus, statusName } from '../../../protocol/constants.js';
import { decodeAbortAck, encodeSessionAbort } from '../../../protocol/frames.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import { FrameSocket } from '../../net/frame-socket.js';
import type { BackupContext } from './context.js';
import { connectServer } from '../../net/connect-server.js';

/** How long telling the server may take: a stopping daemon must not hang on it. */
const GIVE_UP_TIMEOUT_MS = 5000;

/**
 * Tells the server that this agent gives the session up (`ABRT`, protocol version 4), so that it
 * deletes the temporary file now instead of keeping it for a resume. Best effort: when the server
 * cannot be reached, it still deletes the file once `session_ttl` has passed.
 */
export async function giveUpSession(ctx: BackupContext, log: Logger, sessionId: string, reason: string): Promise<void> {
  const timeout = Math.min(GIVE_UP_TIMEOUT_MS, ctx.config.retry.connect_timeout);
  let socket;
  try {
    socket = await connectServer(ctx.config.server, ctx.material, timeout);
    const frames = new FrameSocket(socket);
    socket.write(encodeSessionAbort({ sessionId, reason }));
    const ack = await frames.read(decodeAbortAck, timeout, 'answer to the abort');
    log.info({ session: sessionId, server: statusName(AbortStatus, ack.status).toLowerCase(), reason }, 'session given up');
  } catch (err) {
    log.warn({ session: sessionId, err: errorMessage(err) }, 'could not tell the server the session is given up; it deletes it after session_ttl');
  } finally {
    socket?.destroy();
  }
}

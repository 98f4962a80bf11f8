import { AbortStatus, isSupportedVersion } from '../../../protocol/constants.js';
import { encodeAbortAck, type SessionAbort } from '../../../protocol/frames.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import { sessionContext } from '../session.js';

/**
 * `ABRT` (version 4): the agent gives a session up. The session's connections are closed and its
 * temporary files deleted now, rather than kept for `session_ttl` waiting for a resume. Only the
 * agent the session belongs to (by certificate CN) may do this; for anyone else the session does
 * not exist.
 */
export async function serveAbort(ctx: ServerContext, conn: Connection, ab: SessionAbort): Promise<void> {
  const { socket, remote } = conn;
  const answer = (status: AbortStatus): void => {
    socket.end(encodeAbortAck({ status }));
  };
  const cn = peerName(socket);
  if (!isSupportedVersion(ab.version)) {
    ctx.log.warn({ remote, session: ab.sessionId, version: ab.version }, 'abort refused: unsupported protocol version');
    return answer(AbortStatus.NOT_FOUND);
  }
  const committed = ctx.registry.committedSession(ab.sessionId);
  if (committed && committed.agent === cn) return answer(AbortStatus.COMMITTED);
  // An abort may overtake the session's own set-up (GO is sent before the record is on disk).
  const session = await ctx.registry.byIdWhenReady(ab.sessionId, ctx.config.server.handshake_timeout);
  if (!session || session.closed || session.agent !== cn) {
    ctx.log.warn({ remote, session: ab.sessionId, agent: cn, reason: ab.reason }, 'abort of an unknown session');
    return answer(AbortStatus.NOT_FOUND);
  }
  if (session.committing) {
    ctx.log.info({ ...sessionContext(session), remote, reason: ab.reason }, 'abort came while the session was being committed; the commit goes on');
    return answer(AbortStatus.COMMITTED);
  }
  await ctx.registry.discard(session, `aborted by the agent: ${ab.reason}`, 'aborted');
  answer(AbortStatus.DISCARDED);
}

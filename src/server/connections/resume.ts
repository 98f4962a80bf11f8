import { ResumeStatus, isSupportedVersion, speaksReasons } from '../../../protocol/constants.js';
import { encodeResumeAck, type Resume } from '../../../protocol/frames.js';
import { errorMessage } from '../../errors.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import { sessionContext } from '../session.js';
import { feedPrimary } from './feed-primary.js';
import { feedSingle } from './feed-single.js';

/**
 * `RSME`: a new connection takes over a session whose connection broke, and the body continues
 * from the offset the server has written. For a parallel session this re-attaches the primary
 * (offset 0: it carries no data), an extension documented in protocol/README.md.
 */
export async function serveResume(ctx: ServerContext, conn: Connection, rs: Resume): Promise<void> {
  const { socket, remote } = conn;
  const notFound = (why: string): void => {
    ctx.log.warn({ remote, session: rs.sessionId, agent: rs.agent, reason: why }, 'resume refused');
    socket.end(encodeResumeAck({ status: ResumeStatus.NOT_FOUND, lastOffset: 0 }));
  };
  const cn = peerName(socket);
  const session = ctx.registry.byId(rs.sessionId);
  if (!isSupportedVersion(rs.version)) return notFound(`unsupported protocol version ${rs.version}`);
  if (cn !== rs.agent) return notFound(`agent name "${rs.agent}" does not match certificate CN "${cn ?? ''}"`);
  // The agent missed the Final ACK: tell it what was committed, it checks size and SHA-256.
  const answeredCommitted = (): boolean => {
    const committed = ctx.registry.committedSession(rs.sessionId);
    if (!committed || committed.agent !== rs.agent || committed.storage !== rs.storage || !speaksReasons(conn.version)) return false;
    socket.end(encodeResumeAck({ status: ResumeStatus.COMMITTED, lastOffset: committed.size, sha256: committed.sha256 }));
    ctx.log.info({ remote, session: rs.sessionId, agent: rs.agent, bytes: committed.size }, 'resume of a committed session: answered COMMITTED');
    return true;
  };
  if (answeredCommitted()) return;
  if (!session || session.closed) return notFound('unknown or expired session');
  if (session.agent !== rs.agent || session.storage.name !== rs.storage) return notFound('agent or storage does not match the session');
  // The old connection may still look alive here (a half-open link): the agent knows better. Its
  // handler may be committing the session: then the commit is waited for, and answered.
  await session.link.evict();
  if (session.closed) {
    if (answeredCommitted()) return;
    return notFound('session ended');
  }
  ctx.registry.resumed(session);
  ctx.gate.hold(session.key);
  if (session.mode === 'single') {
    try {
      await session.receiver.flushed();
    } catch (err) {
      await ctx.registry.discard(session, errorMessage(err));
      return notFound(`session failed: ${errorMessage(err)}`);
    }
  }
  session.resumes++;
  ctx.metrics.resumed();
  const fields = { ...sessionContext(session), remote, resumes: session.resumes };
  if (session.mode === 'parallel') {
    socket.write(encodeResumeAck({ status: ResumeStatus.OK, lastOffset: 0 }));
    ctx.log.info(fields, 'primary re-attached');
    return feedPrimary(ctx, session, conn);
  }
  const lastOffset = session.receiver.written;
  socket.write(encodeResumeAck({ status: ResumeStatus.OK, lastOffset }));
  ctx.log.info({ ...fields, lastOffset }, 'session resumed');
  return feedSingle(ctx, session, conn);
}

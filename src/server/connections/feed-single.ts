import type { Connection, ServerContext } from '../context.js';
import { concludeSession } from '../commit.js';
import type { SingleSession } from '../session.js';
import { receiveBody } from '../single-receiver.js';

/**
 * Runs one connection's share of a single-stream session (after NBKP or RSME): body bytes until the
 * agent half-closes after its trailer (then verify and commit), or until the connection breaks
 * (then the session waits, detached, for a resume).
 */
export async function feedSingle(ctx: ServerContext, session: SingleSession, conn: Connection): Promise<void> {
  const { socket, remote } = conn;
  await session.link.occupy(socket, async () => {
    const end = await receiveBody(session.receiver, socket, conn.frames.detach(), ctx.config.server.idle_timeout);
    const receiver = session.receiver;
    // A failed write ends the session (a resume cannot cure it); the agent hears why if it still can.
    if (receiver.failed) return concludeSession(ctx, session, conn, { failed: receiver.failed });
    // A connection that ends without a trailer was cut (a TCP reset can surface as EOF), not finished.
    if (end.how !== 'eof' || !receiver.endsWithTrailer()) {
      socket.destroy();
      ctx.registry.detach(session, remote, end.how === 'eof' ? 'the connection ended before a trailer' : end.why);
      return;
    }
    await concludeSession(ctx, session, conn, receiver.verify());
  });
}

import { decodeTrailer, type Trailer } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import { concludeSession } from '../commit.js';
import type { Connection, ServerContext } from '../context.js';
import { sessionContext, type ParallelSession } from '../session.js';
import { judge } from '../verdict.js';

/** The primary is quiet for the whole backup: its liveness is TCP keepalive's business. */
const PRIMARY_QUIET_MS = 7 * 24 * 3600 * 1000;
const KEEPALIVE_MS = 30_000;

/**
 * Runs the primary connection of a parallel session (after NBKP or RSME): it carries only the
 * trailer. Once the trailer is in and every chunk up to its size is in the file, the session is
 * verified and committed. If the primary breaks first, the session waits for a resume.
 */
export async function feedPrimary(ctx: ServerContext, session: ParallelSession, conn: Connection): Promise<void> {
  const { socket, frames, remote } = conn;
  await session.link.occupy(socket, async () => {
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const assembler = session.chunks.assembler;
    // The trailer, or the end of the session if writing the chunks fails first (a full disk).
    const failed = assembler.whenFailed().then((err) => ({ failed: err }));
    let first: { trailer: Trailer } | { failed: Error };
    try {
      first = await Promise.race([frames.read(decodeTrailer, PRIMARY_QUIET_MS, 'trailer').then((trailer) => ({ trailer })), failed]);
    } catch (err) {
      if (err instanceof NbackupError && (err.kind === 'network' || err.kind === 'timeout')) {
        socket.destroy();
        ctx.registry.detach(session, remote, errorMessage(err));
        return;
      }
      throw err;
    }
    if ('failed' in first) return concludeSession(ctx, session, conn, first);
    const { trailer } = first;
    const closed = socket.destroyed ? Promise.resolve('closed' as const) : new Promise<'closed'>((r) => socket.once('close', () => r('closed')));
    const reached = assembler.reach(trailer.size).then(
      () => 'reached' as const,
      () => 'failed' as const,
    );
    const how = await Promise.race([reached, closed]);
    if (how === 'closed' && !assembler.failed) {
      ctx.registry.detach(session, remote, 'the primary connection closed while its chunks were still arriving');
      return;
    }
    // The file is complete: nothing the streams still send may change it from here on.
    assembler.seal();
    await assembler.settled();
    if (assembler.failed) {
      await concludeSession(ctx, session, conn, { failed: assembler.failed });
      return;
    }
    const streamBytes = [...session.chunks.streams.values()].reduce((n, st) => n + st.bytes, 0);
    ctx.log.info({ ...sessionContext(session), streams: session.chunks.streams.size, streamBytes, ...assembler.stats }, 'parallel session assembled');
    await concludeSession(ctx, session, conn, judge(trailer, assembler.written, assembler.digest()));
  });
}

import { ParallelStatus, isSupportedVersion } from '../../../protocol/constants.js';
import { encodeChunkSack, encodeParallelAck, type ParallelJoin } from '../../../protocol/frames.js';
import { receiveChunks } from '../chunk-stream-receiver.js';
import { peerName, type Connection, type ServerContext } from '../context.js';
import { sessionContext } from '../session.js';

/** `PJIN`: a data stream joins (or re-joins) a parallel session and continues at its offset. */
export async function serveJoin(ctx: ServerContext, conn: Connection, join: ParallelJoin): Promise<void> {
  const { socket, remote } = conn;
  const refuse = (status: ParallelStatus, why: string): void => {
    ctx.log.warn({ remote, session: join.sessionId, stream: join.streamIndex, reason: why }, 'stream join refused');
    socket.end(encodeParallelAck({ status, lastOffset: 0 }));
  };
  // A stream may race its session's set-up (GO is out before the mode frame is read): wait for it.
  const session = await ctx.registry.byIdWhenReady(join.sessionId, ctx.config.server.handshake_timeout);
  if (!isSupportedVersion(join.version)) return refuse(ParallelStatus.NOT_FOUND, `unsupported protocol version ${join.version}`);
  if (!session || session.closed || session.mode !== 'parallel') return refuse(ParallelStatus.NOT_FOUND, 'unknown or expired parallel session');
  if (peerName(socket) !== session.agent) return refuse(ParallelStatus.NOT_FOUND, 'certificate CN does not match the session agent');
  const chunks = session.chunks;
  if (join.streamIndex >= chunks.maxStreams) {
    return refuse(ParallelStatus.FULL, `stream ${join.streamIndex} is beyond the ${chunks.maxStreams} streams the session announced`);
  }
  const stream = chunks.stream(join.streamIndex);
  // A re-join replaces whatever connection still looks alive for that index (half-open link).
  await stream.link.evict();
  if (session.closed) return refuse(ParallelStatus.NOT_FOUND, 'session ended');
  await stream.link.occupy(socket, async () => {
    stream.joins++;
    socket.write(encodeParallelAck({ status: ParallelStatus.OK, lastOffset: stream.bytes }));
    if (stream.recovered) {
      // Taken up after a restart: what the journal holds is stored, acknowledged or not before.
      socket.write(encodeChunkSack({ streamIndex: stream.index, ...stream.recovered }));
      stream.recovered = null;
    }
    const fields = { ...sessionContext(session), remote, stream: stream.index, lastOffset: stream.bytes, joins: stream.joins };
    if (stream.joins > 1) ctx.metrics.rejoined();
    ctx.log.info(fields, stream.joins > 1 ? 'stream re-joined' : 'stream joined');
    const end = await receiveChunks(chunks, stream, socket, conn.frames.detach(), ctx.config.server.idle_timeout);
    if (end.how === 'broken' && !session.closed) {
      ctx.log.warn({ ...sessionContext(session), stream: stream.index, bytes: stream.bytes, reason: end.why }, 'stream connection lost');
    }
  });
}

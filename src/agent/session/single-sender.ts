import { FinalStatus, PROTOCOL_VERSION, TRAILER_SIZE } from '../../../protocol/constants.js';
import { serverDataMessageDecoder, type FinalAck } from '../../../protocol/frames.js';
import { NbackupError, errorMessage } from '../../errors.js';
import type { Logger } from '../../log/logger.js';
import type { RingBuffer } from '../pipeline/ring-buffer.js';
import { NO_DEADLINE_MS, backoffSignal, reportProgress, sendSlice, sliceSize, type BackupContext, type RunStats } from './context.js';
import { committedAnswer } from './final-answer.js';
import { LinkWatchdog } from './link-watchdog.js';
import type { PrimaryConnection } from './primary.js';
import { RestartSession, isRetryable, sleep, type RetryBudget } from './retry.js';

/**
 * A single-stream session (protocol §1): the compressed stream goes from the ring buffer down the
 * primary connection, SACKs free the ring, then the trailer and a half-close, until the Final
 * ACK. When the connection breaks, a new one resumes (RSME) from the server's offset, which must
 * still be in the ring; otherwise the session starts over (RestartSession).
 */
export interface SingleSend {
  ctx: BackupContext;
  log: Logger;
  stats: RunStats;
  primary: PrimaryConnection;
  budget: RetryBudget;
  ring: RingBuffer;
  /** Settles when the producer has finished (or failed). */
  pipeline: Promise<void>;
  /** The encoded trailer, once the pipeline has finished. */
  trailer: () => Buffer | null;
}

const DATA_MESSAGES = serverDataMessageDecoder(PROTOCOL_VERSION);

/** Resolves with the Final ACK. */
export async function sendSingle(s: SingleSend): Promise<FinalAck> {
  const { primary, ring, stats, log } = s;
  let from = 0;
  for (;;) {
    try {
      return await transmit(s, from);
    } catch (err) {
      primary.destroy();
      if (!isRetryable(err)) throw err;
      const delay = s.budget.fail();
      if (delay === null) {
        throw new NbackupError('network', `connection lost ${s.budget.failures} times, giving up: ${errorMessage(err)}`);
      }
      log.warn({ session: primary.sessionId, err: errorMessage(err), attempt: s.budget.failures, delayMs: delay, acked: ring.tail }, 'connection lost; resuming');
      await sleep(delay, backoffSignal(s.ctx));
      const found = await primary.reattach(s.budget);
      if ('committed' in found) {
        log.info({ session: primary.sessionId, bytes: found.committed.size }, 'session was already committed (its Final ACK was lost)');
        return committedAnswer(s.trailer(), found.committed);
      }
      const lastOffset = found.offset;
      from = resumePoint(s, lastOffset);
      // Counted in bytesResent as they really go out again (transmit), not here: another break
      // may come before all of them are sent.
      const resend = Math.max(0, stats.highWater - lastOffset);
      log.info({ session: primary.sessionId, lastOffset, resending: resend, reconnects: stats.reconnects }, 'session resumed');
    }
  }
}

/** Checks the server's offset against what was produced and what the ring still holds. */
function resumePoint(s: SingleSend, lastOffset: number): number {
  const { ring, primary } = s;
  const limit = ring.head + (ring.ended ? TRAILER_SIZE : 0);
  if (lastOffset > limit) {
    primary.destroy();
    throw new NbackupError('protocol', `server resumed at offset ${lastOffset}, beyond the ${limit} bytes produced`);
  }
  const resumeAt = Math.min(lastOffset, ring.head);
  if (!ring.holds(resumeAt)) {
    primary.destroy();
    throw new RestartSession(
      `resume offset ${lastOffset} has already left the ring buffer (it holds ${ring.tail}..${ring.head}); resume.buffer_size is too small for this link`,
    );
  }
  ring.release(resumeAt);
  return lastOffset;
}

/**
 * One connection's worth of the session: send from `from` (data, then the trailer, then a
 * half-close) while SACKs free the ring, until the Final ACK.
 */
async function transmit(s: SingleSend, from: number): Promise<FinalAck> {
  const { ring, stats, ctx } = s;
  const { socket, frames } = s.primary;
  let sent = from;
  let awaitingFinal = false;
  const watchdog = new LinkWatchdog(socket, {
    readTimeoutMs: ctx.config.retry.read_timeout,
    owed: () => sent > ring.tail || awaitingFinal,
    message: `no acknowledgement from the server for ${Math.round(ctx.config.retry.read_timeout / 1000)}s`,
  });
  const finalAck = (async (): Promise<FinalAck> => {
    for (;;) {
      const msg = await frames.read(DATA_MESSAGES, NO_DEADLINE_MS, 'acknowledgement from the server');
      if (msg.type === 'final') {
        // Only a failure may come early: an OK for a stream the server has not had whole is a lie.
        if (msg.status === FinalStatus.OK && !awaitingFinal) {
          throw new NbackupError('protocol', `the server answered ${FinalStatus.OK} (committed) before the trailer was sent`);
        }
        return { status: msg.status, message: msg.message };
      }
      // SACK offsets count trailer bytes too, which never enter the ring.
      if (msg.offset > ring.head + TRAILER_SIZE || (msg.offset > ring.head && !ring.ended)) {
        throw new NbackupError('protocol', `server acknowledged offset ${msg.offset}, beyond the ${ring.head} bytes produced`);
      }
      ring.release(Math.min(msg.offset, ring.head));
      watchdog.heard();
      reportProgress(ctx, stats, ring);
    }
  })();
  // Set once this connection's turn is over: a sender still waiting on the ring must not count
  // (or write) bytes after the session has moved on to a new connection.
  let over = false;
  const sender = (async (): Promise<void> => {
    for (;;) {
      await ring.waitForData(sent);
      if (over || socket.destroyed) throw new NbackupError('network', 'connection closed while sending');
      if (sent >= ring.head && ring.ended) break;
      const view = ring.read(sent, sliceSize(ctx));
      countSent(stats, sent, view.length);
      sent += view.length;
      await sendSlice(ctx, socket, view);
      reportProgress(ctx, stats, ring);
    }
    await s.pipeline;
    if (over || socket.destroyed) throw new NbackupError('network', 'connection closed before the trailer');
    const trailer = s.trailer();
    if (!trailer) throw new NbackupError('internal', 'pipeline ended without a trailer');
    const part = trailer.subarray(Math.max(0, sent - ring.head));
    countSent(stats, ring.head + TRAILER_SIZE - part.length, part.length);
    awaitingFinal = true;
    socket.end(part);
  })();
  sender.catch(() => undefined);
  finalAck.catch(() => undefined);
  try {
    await Promise.race([sender, finalAck]);
    return await finalAck;
  } catch (err) {
    throw watchdog.error ?? err;
  } finally {
    over = true;
    watchdog.stop();
  }
}

/** Counts `length` body bytes sent from offset `at`: those below the high-water mark are resent. */
function countSent(stats: RunStats, at: number, length: number): void {
  stats.bytesSent += length;
  if (at < stats.highWater) stats.bytesResent += Math.min(at + length, stats.highWater) - at;
  stats.highWater = Math.max(stats.highWater, at + length);
}

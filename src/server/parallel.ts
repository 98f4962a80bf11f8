import type tls from 'node:tls';
import { CHUNK_HEADER_SIZE } from '../../protocol/constants.js';
import { decodeChunkHeader, encodeChunkSack, type Trailer } from '../../protocol/frames.js';
import { NbackupError, errorMessage } from '../errors.js';
import { ChunkAssembler } from './chunk-assembler.js';

/**
 * Server side of a parallel session (protocol §3): the data streams, each carrying
 * `[ChunkHeader][payload]...`, feed one ChunkAssembler; the primary connection carries only the
 * trailer and the Final ACK.
 */

/** Chunk sizes a session may announce (the agent's `resume.chunk_size` range). */
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
/**
 * How far ahead of the next chunk the file needs a chunk may be. The agent's ring buffer (at most
 * 1 GiB) bounds the real skew to 16384 chunks of the smallest size; anything beyond is nonsense.
 */
const MAX_SEQ_AHEAD = 1 << 15;

export interface StreamState {
  index: number;
  /** Stream bytes (headers + payloads) of complete chunks received: the re-join offset. */
  bytes: number;
  socket: tls.TLSSocket | null;
  /** Settles when the connection currently feeding this stream is done with it. */
  attached: Promise<void> | null;
  joins: number;
  chunks: number;
  /**
   * ChunkSACKs go out in stream order, once each chunk is stored, to whichever connection feeds
   * the stream by then: chunks received just before a break are acknowledged after the re-join.
   */
  acks: Promise<void>;
}

export class ParallelState {
  readonly streams = new Map<number, StreamState>();
  readonly assembler: ChunkAssembler;
  trailer: Trailer | null = null;

  constructor(
    readonly maxStreams: number,
    readonly chunkSize: number,
    fd: number,
    stagingPath: string,
    memLimit: number,
  ) {
    this.assembler = new ChunkAssembler(fd, stagingPath, memLimit);
  }

  stream(index: number): StreamState {
    let s = this.streams.get(index);
    if (!s) {
      s = { index, bytes: 0, socket: null, attached: null, joins: 0, chunks: 0, acks: Promise.resolve() };
      this.streams.set(index, s);
    }
    return s;
  }

  /** Closes every data stream connection. */
  closeStreams(): void {
    for (const s of this.streams.values()) s.socket?.destroy();
  }
}

/**
 * Reads chunks from one data stream connection until it ends or breaks. Each complete chunk goes to
 * the assembler; its ChunkSACK is sent, in stream order, once it is stored. A partial chunk at a
 * break is dropped (the re-join offset counts complete chunks only). Resolves with how the
 * connection ended; a malformed header rejects (the caller closes this stream only).
 */
export function receiveChunks(
  state: ParallelState,
  stream: StreamState,
  socket: tls.TLSSocket,
  early: Buffer,
  idleTimeoutMs: number,
): Promise<'eof' | 'broken'> {
  const assembler = state.assembler;
  return new Promise((resolve, reject) => {
    let header: Buffer = Buffer.alloc(0);
    let payload: Buffer | null = null;
    let filled = 0;
    let seq = 0;
    let done = false;

    const finish = (outcome: 'eof' | 'broken' | Error): void => {
      if (done) return;
      done = true;
      socket.setTimeout(0);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.off('timeout', onTimeout);
      if (outcome instanceof Error) {
        socket.destroy();
        reject(outcome);
        return;
      }
      if (outcome === 'broken') {
        socket.destroy();
        resolve(outcome);
        return;
      }
      // Clean end: acknowledge what is stored, then close our side. Chunks may wait for an earlier
      // chunk of another stream for a long time: if the connection goes first (a re-join replaced
      // it), it is released and its acknowledgements go to the new connection.
      const closed = socket.destroyed ? Promise.resolve() : new Promise<void>((r) => socket.once('close', () => r()));
      Promise.race([stream.acks.then(() => 'acked' as const), closed.then(() => 'closed' as const)]).then(
        (how) => {
          if (how === 'acked') socket.end();
          else socket.destroy();
          resolve(how === 'acked' ? 'eof' : 'broken');
        },
        () => {
          socket.destroy();
          resolve('broken');
        },
      );
    };

    const chunkDone = (data: Buffer): void => {
      stream.bytes += CHUNK_HEADER_SIZE + data.length;
      stream.chunks++;
      const offset = stream.bytes;
      const chunkSeq = seq;
      const stored = assembler.add(chunkSeq, data);
      // Seen through the chain below; a failure earlier in the chain must not leave it unhandled.
      stored.catch(() => undefined);
      const acks = stream.acks
        .then(() => stored)
        .then(() => {
          const current = stream.socket;
          if (current && current.writable) current.write(encodeChunkSack({ streamIndex: stream.index, chunkSeq, offset }));
        });
      stream.acks = acks;
      acks.catch((err: unknown) => finish(new NbackupError('storage', `chunk ${chunkSeq} could not be stored: ${errorMessage(err)}`)));
      if (assembler.congested) {
        socket.pause();
        void assembler.drained().then(() => {
          if (!done) socket.resume();
        });
      }
    };

    const onData = (chunk: Buffer): void => {
      let off = 0;
      while (off < chunk.length && !done) {
        if (!payload) {
          const need = CHUNK_HEADER_SIZE - header.length;
          const take = chunk.subarray(off, off + need);
          header = header.length === 0 ? Buffer.from(take) : Buffer.concat([header, take]);
          off += take.length;
          if (header.length < CHUNK_HEADER_SIZE) return;
          const h = decodeChunkHeader(header);
          header = Buffer.alloc(0);
          if (!h) return finish(new NbackupError('protocol', 'unreadable chunk header'));
          const problem = headerProblem(state, h.value.globalSeq, h.value.length);
          if (problem) return finish(new NbackupError('protocol', `stream ${stream.index}: ${problem}`));
          seq = h.value.globalSeq;
          payload = Buffer.allocUnsafe(h.value.length);
          filled = 0;
          continue;
        }
        const n = chunk.copy(payload, filled, off);
        filled += n;
        off += n;
        if (filled === payload.length) {
          const data = payload;
          payload = null;
          chunkDone(data);
        }
      }
    };
    const onEnd = (): void => {
      if (payload || header.length > 0) return finish('broken');
      finish('eof');
    };
    const onClose = (): void => finish('broken');
    const onTimeout = (): void => {
      // A stream may rightly be quiet while the agent waits for a slower stream: only a whole
      // session with nothing arriving or written for the idle timeout means a dead connection.
      if (Date.now() - assembler.lastActivity < idleTimeoutMs) {
        socket.setTimeout(idleTimeoutMs);
        return;
      }
      finish(new NbackupError('timeout', `stream ${stream.index}: nothing received for ${Math.round(idleTimeoutMs / 1000)}s`));
    };

    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('timeout', onTimeout);
    socket.setTimeout(idleTimeoutMs);
    if (early.length > 0) onData(early);
  });
}

function headerProblem(state: ParallelState, seq: number, length: number): string | null {
  if (length === 0 || length > state.chunkSize) return `chunk length ${length} is outside 1..${state.chunkSize}`;
  if (seq >= state.assembler.nextSeq + MAX_SEQ_AHEAD) return `chunk ${seq} is absurdly far ahead of chunk ${state.assembler.nextSeq}`;
  return null;
}

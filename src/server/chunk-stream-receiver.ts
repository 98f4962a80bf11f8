import type tls from 'node:tls';
import { CHUNK_HEADER_SIZE } from '../../protocol/constants.js';
import { decodeChunkHeader, encodeChunkSack } from '../../protocol/frames.js';
import { NbackupError, errorMessage } from '../errors.js';
import type { Leftover } from '../net/frame-socket.js';
import type { ChunkAssembler } from './chunk-assembler.js';
import { ConnectionSlot } from './connection-slot.js';
import { SocketPump, type PumpEnd, type PumpTarget } from './socket-pump.js';

/**
 * The data streams of a parallel session (protocol §3): each carries `[ChunkHeader][payload]...`
 * into the session's one ChunkAssembler, and hears a ChunkSACK for each chunk once it is stored.
 */

/**
 * How far ahead of the next chunk the file needs a chunk may be. The agent's ring buffer (at most
 * 1 GiB) bounds the real skew to 16384 chunks of the smallest size; anything beyond is nonsense.
 */
const MAX_SEQ_AHEAD = 1 << 15;

export interface StreamState {
  readonly index: number;
  /** Stream bytes (headers + payloads) of complete chunks received: the re-join offset. */
  bytes: number;
  /**
   * Set on a session taken up after a server restart: its chunks up to this offset are stored,
   * but their ChunkSACKs may never have gone out. The first join acknowledges them at once.
   */
  recovered: { chunkSeq: number; offset: number } | null;
  /** The connection feeding this stream now; a re-join evicts a stale one. */
  readonly link: ConnectionSlot;
  joins: number;
  /**
   * ChunkSACKs go out in stream order, once each chunk is stored, to whichever connection feeds
   * the stream by then: chunks received just before a break are acknowledged after the re-join.
   */
  acks: Promise<void>;
}

export class ChunkStreams {
  readonly streams = new Map<number, StreamState>();

  constructor(
    readonly maxStreams: number,
    readonly chunkSize: number,
    readonly assembler: ChunkAssembler,
  ) {}

  stream(index: number): StreamState {
    let s = this.streams.get(index);
    if (!s) {
      s = { index, bytes: 0, recovered: null, link: new ConnectionSlot(), joins: 0, acks: Promise.resolve() };
      this.streams.set(index, s);
    }
    return s;
  }

  /** Closes every data stream connection. */
  closeAll(): void {
    for (const s of this.streams.values()) s.link.destroy();
  }
}

/**
 * Reads chunks from one data stream connection until it ends or breaks. A partial chunk at a break
 * is dropped (the re-join offset counts complete chunks only). A malformed header, a chunk that
 * cannot be stored or a stream idle while the whole session is idle rejects: the caller closes
 * this stream only.
 */
export async function receiveChunks(
  chunks: ChunkStreams,
  stream: StreamState,
  socket: tls.TLSSocket,
  early: Leftover,
  idleMs: number,
): Promise<PumpEnd> {
  const assembler = chunks.assembler;
  const parser = new ChunkParser(chunks, stream.index, (seq, data) => {
    const streamStart = stream.bytes;
    stream.bytes += CHUNK_HEADER_SIZE + data.length;
    const offset = stream.bytes;
    const stored = assembler.add(seq, data, { stream: stream.index, streamStart });
    // Seen through the chain below; a failure earlier in the chain must not leave it unhandled.
    stored.catch(() => undefined);
    const acks = stream.acks
      .then(() => stored)
      .then(() => {
        const current = stream.link.socket;
        if (current && current.writable) current.write(encodeChunkSack({ streamIndex: stream.index, chunkSeq: seq, offset }));
      });
    stream.acks = acks;
    acks.catch((err: unknown) => pump.fail(new NbackupError('storage', `chunk ${seq} could not be stored: ${errorMessage(err)}`)));
  });
  const pump = new SocketPump(socket, parser, {
    idleMs,
    // A stream may rightly be quiet while the agent waits for a slower stream: only a whole
    // session with nothing arriving or written for the idle timeout means a dead connection.
    keepWaiting: () => Date.now() - assembler.lastActivity < idleMs,
  });
  const end = await pump.run(early);
  if (end.how === 'idle') throw new NbackupError('timeout', `stream ${stream.index}: ${end.why}; ${assembler.describe()}`);
  if (end.how === 'broken') return end;
  if (parser.partial) {
    socket.destroy();
    return { how: 'broken', why: 'the stream ended inside a chunk' };
  }
  // Clean end: acknowledge what is stored, then close our side. Chunks may wait for an earlier
  // chunk of another stream for a long time: if the connection goes first (a re-join replaced
  // it), it is released and its acknowledgements go to the new connection.
  const closed = socket.destroyed ? Promise.resolve() : new Promise<void>((r) => socket.once('close', () => r()));
  const how = await Promise.race([
    stream.acks.then(
      () => 'acked' as const,
      () => 'failed' as const,
    ),
    closed.then(() => 'closed' as const),
  ]);
  if (how === 'acked') {
    socket.end();
    return end;
  }
  socket.destroy();
  return { how: 'broken', why: how === 'failed' ? 'a chunk could not be stored' : 'connection closed before its chunks were stored' };
}

/** Cuts a data stream's bytes into chunks; a pump target whose backpressure is the assembler's. */
class ChunkParser implements PumpTarget {
  private header: Buffer = Buffer.alloc(0);
  /**
   * The chunk being received: its length from the header, and the pieces that came so far (views
   * of what the socket read, joined once the chunk is whole). Memory follows the bytes that
   * arrived, not the length a header announced: 8-byte headers alone pin nothing.
   */
  private payload: { length: number; parts: Buffer[]; filled: number } | null = null;
  private seq = 0;

  constructor(
    private readonly chunks: ChunkStreams,
    private readonly index: number,
    private readonly onChunk: (seq: number, data: Buffer) => void,
  ) {}

  /** Bytes of an unfinished header or payload are pending. */
  get partial(): boolean {
    return this.payload !== null || this.header.length > 0;
  }

  get congested(): boolean {
    return this.chunks.assembler.congested;
  }

  drained(): Promise<void> {
    return this.chunks.assembler.drained();
  }

  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (!this.payload) {
        const take = chunk.subarray(off, off + CHUNK_HEADER_SIZE - this.header.length);
        this.header = this.header.length === 0 ? Buffer.from(take) : Buffer.concat([this.header, take]);
        off += take.length;
        if (this.header.length < CHUNK_HEADER_SIZE) return;
        const h = decodeChunkHeader(this.header);
        this.header = Buffer.alloc(0);
        if (!h) throw new NbackupError('protocol', 'unreadable chunk header');
        const problem = this.headerProblem(h.value.globalSeq, h.value.length);
        if (problem) throw new NbackupError('protocol', `stream ${this.index}: ${problem}`);
        this.seq = h.value.globalSeq;
        this.payload = { length: h.value.length, parts: [], filled: 0 };
        continue;
      }
      const p = this.payload;
      const piece = chunk.subarray(off, off + (p.length - p.filled));
      p.parts.push(piece);
      p.filled += piece.length;
      off += piece.length;
      if (p.filled === p.length) {
        this.payload = null;
        this.onChunk(this.seq, p.parts.length === 1 ? Buffer.from(piece) : Buffer.concat(p.parts, p.length));
      }
    }
  }

  private headerProblem(seq: number, length: number): string | null {
    const { chunkSize, assembler } = this.chunks;
    if (length === 0 || length > chunkSize) return `chunk length ${length} is outside 1..${chunkSize}`;
    if (seq >= assembler.nextSeq + MAX_SEQ_AHEAD) return `chunk ${seq} is absurdly far ahead of chunk ${assembler.nextSeq}`;
    return null;
  }
}

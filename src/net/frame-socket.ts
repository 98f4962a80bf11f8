import type { Socket } from 'node:net';
import { FrameReader } from '../../protocol/reader.js';
import type { Decoded } from '../../protocol/frames.js';
import { NbackupError } from '../errors.js';
import { timerDelay } from '../timer-limit.js';

/**
 * Reads protocol frames from a socket with a deadline. Data that arrives before anyone asks is kept
 * in the FrameReader, up to its `maxBuffered`: past that the socket is paused until frames are read,
 * so a peer that sends faster than it is answered (or goes on sending after its answer) is held
 * back by TCP instead of filling memory. A frame that is malformed rejects with the decoder's
 * ProtocolError. After the framed part of a conversation, `detach()` hands over the unread bytes for
 * a raw body phase; the socket may then be paused, and the new reader resumes it.
 */
export class FrameSocket {
  readonly reader: FrameReader;
  private ended = false;
  private halfClosed = false;
  private paused = false;
  private error: Error | null = null;
  private notify: (() => void) | null = null;
  private readonly onData = (chunk: Buffer): void => {
    this.reader.push(chunk);
    // Again each time: someone else may have resumed the socket meanwhile.
    if (this.reader.buffered > this.reader.maxBuffered) {
      this.paused = true;
      this.socket.pause();
    }
    this.notify?.();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.halfClosed = true;
    this.notify?.();
  };
  private readonly onError = (err: Error): void => {
    this.error = err;
    this.notify?.();
  };
  private readonly onClose = (): void => {
    this.ended = true;
    this.notify?.();
  };

  constructor(
    readonly socket: Socket,
    maxBuffered = 64 * 1024,
  ) {
    this.reader = new FrameReader({ maxBuffered });
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  /** Resolves with the next frame; rejects on a malformed frame, EOF, socket error or timeout. */
  async read<T>(decode: (b: Buffer) => Decoded<T> | null, timeoutMs: number, what: string): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const frame = this.reader.read(decode);
      if (frame !== null) {
        if (this.paused && this.reader.buffered <= this.reader.maxBuffered) {
          this.paused = false;
          this.socket.resume();
        }
        return frame;
      }
      if (this.error) throw new NbackupError('network', `connection failed while waiting for ${what}: ${this.error.message}`, { cause: this.error });
      if (this.ended) throw new NbackupError('network', `connection closed while waiting for ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new NbackupError('timeout', `no ${what} within ${Math.round(timeoutMs / 1000)}s`);
      await new Promise<void>((resolve) => {
        // A deadline past the timer limit is reached in steps (the loop checks it again).
        const timer = setTimeout(resolve, timerDelay(left));
        this.notify = () => {
          clearTimeout(timer);
          this.notify = null;
          resolve();
        };
      });
    }
  }

  /**
   * Stops framing; returns whatever was received but not yet read as frames, and whether the peer
   * has already half-closed (its 'end' event is gone by then).
   */
  detach(): Leftover {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return { bytes: this.reader.takeAll(), peerEnded: this.halfClosed };
  }
}

/** What a FrameSocket hands over when the conversation turns into a raw byte stream. */
export interface Leftover {
  bytes: Buffer;
  peerEnded: boolean;
}

/** Writes and resolves when the socket can take more (or rejects when it is gone). */
export function writeWithBackpressure(socket: Socket, data: Buffer): Promise<void> | undefined {
  if (socket.destroyed) return Promise.reject(new NbackupError('network', 'connection is closed'));
  if (socket.write(data)) return undefined;
  return whenDrained(socket);
}

/**
 * Resolves once the socket's queued writes have drained; rejects when it closes first or, with
 * `timeout`, when the peer has not taken them within `timeout.ms` (`what` names them).
 */
export function whenDrained(socket: Socket, timeout?: { ms: number; what: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(new NbackupError('network', 'connection closed while sending'));
    const timer = timeout ? setTimeout(() => done(new NbackupError('network', `${timeout.what} not taken within ${timeout.ms / 1000}s`)), timeout.ms) : undefined;
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

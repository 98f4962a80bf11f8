import type tls from 'node:tls';
import type { Leftover } from '../net/frame-socket.js';

/**
 * The raw read loop shared by the single-stream body and the chunk streams: every byte a
 * connection brings goes to a target in arrival order; the socket is paused while the target has
 * more waiting for the disk than it wants (backpressure reaches the agent through TCP) and resumed
 * when it drains. The pump ends at the peer's half-close, a break, an idle timeout, or an error
 * from the target.
 */
export type PumpEnd =
  /** The peer half-closed: everything it sent was pushed. The socket is left open for an answer. */
  | { how: 'eof' }
  /** The connection broke (reset, destroyed); `why` is the socket's error when there was one. */
  | { how: 'broken'; why: string }
  /** Nothing arrived for `idleMs` and the target did not ask to keep waiting. */
  | { how: 'idle'; why: string }
  /** `stop` was called: reading ended, the socket is left open for an answer. */
  | { how: 'stopped'; why: string };

export interface PumpTarget {
  /** Takes bytes in arrival order. A throw ends the pump: the socket is destroyed and `run` rejects. */
  push(chunk: Buffer): void;
  /** True while too much waits to be written: the socket is paused until `drained()`. */
  readonly congested: boolean;
  drained(): Promise<void>;
}

export interface PumpOptions {
  idleMs: number;
  /** Asked when nothing arrived for `idleMs`: true waits another `idleMs` (the default is false). */
  keepWaiting?: () => boolean;
}

export class SocketPump {
  private ended = false;
  private fault: ((err: Error) => void) | null = null;
  private halt: ((why: string) => void) | null = null;

  constructor(
    private readonly socket: tls.TLSSocket,
    private readonly target: PumpTarget,
    private readonly opts: PumpOptions,
  ) {}

  /**
   * Runs until the connection ends. `early` is what arrived before the pump took over: bytes, and
   * whether the peer's half-close came with them (its 'end' event will not come again).
   */
  run(early: Leftover): Promise<PumpEnd> {
    const { socket, target, opts } = this;
    return new Promise<PumpEnd>((resolve, reject) => {
      let lastError: Error | null = null;
      const finish = (end: PumpEnd | Error): void => {
        if (this.ended) return;
        this.ended = true;
        this.fault = null;
        this.halt = null;
        socket.setTimeout(0);
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.off('timeout', onTimeout);
        if (end instanceof Error || end.how === 'broken' || end.how === 'idle') socket.destroy();
        if (end instanceof Error) reject(end);
        else resolve(end);
      };
      const onData = (chunk: Buffer): void => {
        try {
          target.push(chunk);
        } catch (err) {
          finish(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (!this.ended && target.congested) {
          socket.pause();
          void target.drained().then(() => {
            if (!this.ended) socket.resume();
          });
        }
      };
      const onEnd = (): void => finish({ how: 'eof' });
      const onError = (err: Error): void => {
        lastError = err;
      };
      const onClose = (): void => finish({ how: 'broken', why: lastError ? lastError.message : 'connection closed' });
      const onTimeout = (): void => {
        if (opts.keepWaiting?.()) {
          socket.setTimeout(opts.idleMs);
          return;
        }
        finish({ how: 'idle', why: `nothing received for ${Math.round(opts.idleMs / 1000)}s (idle_timeout)` });
      };
      this.fault = finish;
      this.halt = (why) => finish({ how: 'stopped', why });
      socket.on('data', onData);
      socket.on('end', onEnd);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.on('timeout', onTimeout);
      socket.setTimeout(opts.idleMs);
      // The FrameSocket may have left it paused (it held a frame reader's worth of bytes).
      socket.resume();
      if (early.bytes.length > 0) onData(early.bytes);
      if (early.peerEnded) onEnd();
      // The connection may have gone while the handler was busy: its 'close' will not come again.
      else if (socket.destroyed) onClose();
    });
  }

  /** Ends a running pump with `err`: the socket is destroyed and `run` rejects. No-op once ended. */
  fail(err: Error): void {
    this.fault?.(err);
  }

  /** Stops reading, leaving the socket open so an answer can still go out. No-op once ended. */
  stop(why: string): void {
    this.halt?.(why);
  }
}

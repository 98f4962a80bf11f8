import { encodeControlFromServer, type ControlFromServer } from '../../../protocol/frames.js';
import type { Logger } from '../../log/logger.js';

/**
 * The agents' live control channels, by agent name (the certificate CN). A newer channel of the
 * same agent replaces the older one. Sending is best effort: a frame for an agent without a
 * channel is dropped and the caller falls back (BUSY on the handshake instead of CDFE …).
 */
export interface ControlLink {
  readonly agent: string;
  send(frame: Buffer): void;
  close(why: string): void;
}

export class ControlHub {
  private readonly links = new Map<string, ControlLink>();
  private readonly rotateAckWaiters = new Map<string, (() => void)[]>();

  constructor(private readonly log: Logger) {}

  attach(link: ControlLink): void {
    const old = this.links.get(link.agent);
    this.links.set(link.agent, link);
    if (old && old !== link) old.close('replaced by a newer control channel of the same agent');
  }

  detach(link: ControlLink): void {
    if (this.links.get(link.agent) === link) this.links.delete(link.agent);
  }

  has(agent: string): boolean {
    return this.links.has(agent);
  }

  /** Sends a frame to an agent's control channel; false when it has none. */
  send(agent: string, frame: ControlFromServer): boolean {
    const link = this.links.get(agent);
    if (!link) return false;
    link.send(encodeControlFromServer(frame));
    this.log.debug({ agent, frame: frame.type }, 'control frame sent');
    return true;
  }

  /** An agent answered CRAK for a stream: wakes whoever asked for that rotation. */
  rotateAcked(agent: string, streamIndex: number): void {
    const key = `${agent}:${streamIndex}`;
    const waiters = this.rotateAckWaiters.get(key) ?? [];
    this.rotateAckWaiters.delete(key);
    for (const w of waiters) w();
  }

  /** Resolves true when the agent acknowledges the rotation of `streamIndex`, false after timeoutMs. */
  waitRotateAck(agent: string, streamIndex: number, timeoutMs: number): Promise<boolean> {
    const key = `${agent}:${streamIndex}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      const list = this.rotateAckWaiters.get(key) ?? [];
      list.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
      this.rotateAckWaiters.set(key, list);
    });
  }
}

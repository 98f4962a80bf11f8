import type { Logger } from '../../log/logger.js';
import type { ControlHub } from './control-hub.js';

/**
 * `server.max_concurrent_sessions`: how many sessions may be received at once (0 = no limit).
 *
 * A session holds a slot from its handshake until it is committed, discarded, or its connection is
 * lost (a session kept for a resume does not hold one; its resume is always let in, and holds one
 * again, even past the limit). An agent over the limit gets BUSY on the handshake; if it has a
 * control channel it is also told to wait (CDFE) and queued, and when a slot frees the first queued
 * agent still connected is admitted (CADM) and the slot is kept for it for RESERVE_MS. Agents
 * without a control channel retry on their own.
 */
const RESERVE_MS = 30_000;
/** What CDFE tells a waiting agent: come back in this many minutes at the latest. */
const DEFER_MINUTES = 1;

export class AdmissionGate {
  private readonly holders = new Set<string>();
  /** agent → when its reserved slot lapses. */
  private readonly reserved = new Map<string, NodeJS.Timeout>();
  private readonly waiting: string[] = [];

  constructor(
    private readonly limit: number,
    private readonly hub: ControlHub,
    private readonly log: Logger,
  ) {}

  get inUse(): number {
    return this.holders.size;
  }

  /** Takes a slot for session `key` of `agent`, or returns false (the caller answers BUSY). */
  tryEnter(agent: string, key: string): boolean {
    if (this.limit === 0) {
      this.holders.add(key);
      return true;
    }
    const mine = this.reserved.get(agent);
    const othersReserved = this.reserved.size - (mine ? 1 : 0);
    if (this.holders.size + othersReserved < this.limit) {
      if (mine) clearTimeout(mine);
      this.reserved.delete(agent);
      this.holders.add(key);
      const at = this.waiting.indexOf(agent);
      if (at !== -1) this.waiting.splice(at, 1);
      this.log.info({ agent, key, inUse: this.holders.size, limit: this.limit }, 'admission: slot taken');
      return true;
    }
    if (this.hub.send(agent, { type: 'defer', minutes: DEFER_MINUTES }) && !this.waiting.includes(agent)) this.waiting.push(agent);
    this.log.info({ agent, key, inUse: this.holders.size, reserved: this.reserved.size, limit: this.limit, queued: this.waiting.length }, 'admission: deferred');
    return false;
  }

  /**
   * A resumed session holds a slot again, even past the limit: a resume is never refused (the
   * agent would send its whole backup again), but while it runs, new sessions wait as for any other.
   */
  hold(key: string): void {
    if (this.holders.has(key)) return;
    this.holders.add(key);
    if (this.limit > 0) this.log.info({ key, inUse: this.holders.size, limit: this.limit }, 'admission: slot held again by a resumed session');
  }

  /** Session `key` no longer holds its slot (idempotent); the next waiting agent may be admitted. */
  leave(key: string): void {
    if (!this.holders.delete(key)) return;
    if (this.limit > 0) this.log.info({ key, inUse: this.holders.size, limit: this.limit }, 'admission: slot freed');
    this.admitNext();
  }

  private admitNext(): void {
    while (this.limit > 0 && this.waiting.length > 0 && this.holders.size + this.reserved.size < this.limit) {
      const agent = this.waiting.shift()!;
      if (!this.hub.send(agent, { type: 'admit', slot: Math.min(255, this.holders.size + this.reserved.size) })) continue;
      const timer = setTimeout(() => {
        this.reserved.delete(agent);
        this.log.warn({ agent }, 'admission: the admitted agent did not come; slot released');
        this.admitNext();
      }, RESERVE_MS);
      timer.unref();
      this.reserved.set(agent, timer);
      this.log.info({ agent }, 'admission: admitted');
    }
  }
}

import type { Logger } from '../../log/logger.js';
import type { SessionRegistry } from '../registry.js';
import type { ParallelSession } from '../session.js';
import type { ControlHub } from './control-hub.js';

/**
 * Flow rotation: a parallel stream whose throughput stays below `min_throughput` for a whole
 * `window` is asked to rotate (CROT on its agent's control channel): the agent drains it (every
 * chunk sent on it acknowledged), answers CRAK and re-joins on a fresh connection, which may take
 * a better path (another ECMP hash, a new NAT entry). At most one rotation per session is under
 * way at a time. `rotateNow()` (SIGUSR2) asks each parallel session for one rotation by hand.
 */
export interface FlowRotationConfig {
  enabled: boolean;
  min_throughput: number;
  window: number;
}

const ACK_TIMEOUT_MS = 60_000;

export class FlowRotator {
  private timer: NodeJS.Timeout | null = null;
  /** session id → stream index → bytes at the last sample. */
  private readonly seen = new Map<string, Map<number, number>>();
  private readonly busy = new Set<string>();
  private readonly nextByHand = new Map<string, number>();

  constructor(
    private readonly cfg: FlowRotationConfig,
    private readonly registry: SessionRegistry,
    private readonly hub: ControlHub,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (!this.cfg.enabled || this.timer) return;
    this.timer = setInterval(() => this.sample(), this.cfg.window);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One rotation per parallel session whose agent has a control channel, streams in turn. */
  rotateNow(): number {
    let asked = 0;
    for (const s of this.parallelSessions()) {
      const open = this.openStreams(s);
      if (open.length === 0) continue;
      const turn = this.nextByHand.get(s.id) ?? 0;
      this.nextByHand.set(s.id, turn + 1);
      if (this.ask(s, open[turn % open.length], 'asked by hand (SIGUSR2)')) asked++;
    }
    return asked;
  }

  private parallelSessions(): ParallelSession[] {
    return this.registry.live().filter((s): s is ParallelSession => s.mode === 'parallel' && !s.committing && this.hub.has(s.agent));
  }

  private openStreams(s: ParallelSession): number[] {
    return [...s.chunks.streams.values()].filter((st) => st.link.socket !== null).map((st) => st.index);
  }

  private sample(): void {
    const live = new Set<string>();
    for (const s of this.parallelSessions()) {
      live.add(s.id);
      const before = this.seen.get(s.id) ?? new Map<number, number>();
      const now = new Map<number, number>();
      let slowest: { index: number; rate: number } | null = null;
      for (const st of s.chunks.streams.values()) {
        now.set(st.index, st.bytes);
        const was = before.get(st.index);
        if (was === undefined || st.link.socket === null) continue;
        const rate = ((st.bytes - was) * 1000) / this.cfg.window;
        if (rate < this.cfg.min_throughput && (!slowest || rate < slowest.rate)) slowest = { index: st.index, rate };
      }
      this.seen.set(s.id, now);
      if (slowest) this.ask(s, slowest.index, `${Math.round(slowest.rate)} B/s over ${this.cfg.window / 1000}s, below min_throughput ${this.cfg.min_throughput} B/s`);
    }
    for (const id of this.seen.keys()) if (!live.has(id)) this.seen.delete(id);
  }

  private ask(s: ParallelSession, index: number, why: string): boolean {
    if (this.busy.has(s.id)) return false;
    if (!this.hub.send(s.agent, { type: 'rotate', streamIndex: index })) return false;
    this.busy.add(s.id);
    this.log.info({ session: s.id, agent: s.agent, stream: index, reason: why }, 'stream rotation asked');
    void this.hub.waitRotateAck(s.agent, index, ACK_TIMEOUT_MS).then((acked) => {
      this.busy.delete(s.id);
      if (!acked) this.log.warn({ session: s.id, agent: s.agent, stream: index }, 'stream rotation not acknowledged in time');
    });
    return true;
  }
}

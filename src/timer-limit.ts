/**
 * setTimeout fires after ~1 ms when given more than 2^31-1 ms (24.8 days). Every delay that comes
 * from a peer or from arithmetic on a configured one (a deadline 2.5 keepalives away, a wait the
 * server asks for) goes through `timerDelay`; a caller that needs longer waits in steps.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function timerDelay(ms: number): number {
  return Math.min(Math.max(0, ms), MAX_TIMER_MS);
}

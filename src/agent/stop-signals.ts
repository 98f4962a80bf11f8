import type { StopSignal } from '../exit-codes.js';

const STOP_SIGNALS: readonly StopSignal[] = ['SIGINT', 'SIGTERM'];

/**
 * Calls `onSignal` for SIGINT and SIGTERM instead of their default action (the process killed
 * where it stands), until the returned function is called.
 */
export function catchStopSignals(onSignal: (signal: StopSignal) => void): () => void {
  const handlers = STOP_SIGNALS.map((signal) => [signal, () => onSignal(signal)] as const);
  for (const [signal, handler] of handlers) process.on(signal, handler);
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}

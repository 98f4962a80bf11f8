import { ProtocolError } from '../protocol/errors.js';

/**
 * Errors are values with a kind and a message an operator can act on. The CLIs turn them into one
 * line and an exit code (exit-codes.ts); nothing in the program throws a bare Error for a
 * condition it expects.
 */
export type ErrorKind =
  | 'usage'
  | 'config'
  | 'tls'
  | 'protocol'
  | 'source'
  | 'network'
  | 'rejected'
  | 'server'
  | 'checksum'
  | 'storage'
  | 'timeout'
  | 'aborted'
  | 'hook'
  | 'internal';

const nativeInstanceOf = Function.prototype[Symbol.hasInstance];

export class NbackupError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = 'NbackupError';
  }

  /**
   * protocol/ is the pure layer and cannot import this class, so its ProtocolError (kind
   * 'protocol') is accepted as an NbackupError here. Subclasses keep the ordinary check.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== NbackupError) return nativeInstanceOf.call(this, value);
    return nativeInstanceOf.call(NbackupError, value) || value instanceof ProtocolError;
  }
}

/** Anything thrown, as an NbackupError: ours pass through, the rest become `kind` (default internal). */
export function asNbackupError(err: unknown, kind: ErrorKind = 'internal'): NbackupError {
  if (err instanceof NbackupError) return err;
  return new NbackupError(kind, errorMessage(err), { cause: err });
}

/** The message of anything thrown, for logs and one-line CLI errors. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Node's errno code of a thrown system error, if it has one. */
export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}

/**
 * Errors are values with a kind and a message an operator can act on. The CLI turns them into one
 * line and an exit code; nothing in the pipeline throws a bare Error for a condition it expects.
 */
export type ErrorKind =
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
  | 'internal';

export class NbackupError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = 'NbackupError';
  }
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

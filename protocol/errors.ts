/** What exactly was wrong with bytes on the wire (or with a value handed to an encoder). */
export type ProtocolErrorCode =
  | 'line-too-long' // a line reached MAX_LINE_BYTES + 1 bytes without `\n`
  | 'bad-magic' // the 4-byte magic is not the one (or one of the ones) expected
  | 'bad-version' // a version byte this code does not speak
  | 'bad-utf8' // a line is not valid UTF-8 (or a string to encode is not well-formed)
  | 'bad-status' // a status / reason number the spec does not define
  | 'bad-value' // a field out of range (unsafe u64, zero where zero is meaningless, `\n` in a line …)
  | 'oversized' // FrameReader: more buffered than allowed and the frame is still incomplete
  | 'truncated'; // the stream ended in the middle of a frame

/**
 * A malformed frame. The only sensible reaction is to log `message` and close that connection.
 *
 * This layer is pure and imports nothing from src/, so ProtocolError cannot extend the program's
 * NbackupError; it carries the same `kind` field ('protocol'), and src/errors.ts counts it as one.
 */
export class ProtocolError extends Error {
  readonly kind = 'protocol' as const;
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'ProtocolError';
  }
}

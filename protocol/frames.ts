/**
 * Every NBKP frame as a pure pair of functions: `encodeX(value) → Buffer` and
 * `decodeX(buf) → { value, size } | null`. No I/O here; FrameReader (reader.ts) feeds decoders
 * from a socket.
 *
 * Decoder contract:
 *   - `buf` holds bytes from the start of the frame; anything after the frame is left alone and
 *     `size` says how many bytes the frame took.
 *   - `null` means "not enough bytes yet". A prefix of a valid frame always gives null.
 *   - Malformed input throws ProtocolError as soon as the bytes that prove it are present
 *     (a wrong magic once 4 bytes are there, a line once 513 bytes came without `\n`, …).
 *   - Decoded values never alias `buf` (byte fields are copied).
 * Encoders validate their input and throw ProtocolError rather than put something on the wire
 * the peer would have to reject.
 *
 * The frames live in one module per part of the spec; this module re-exports them all and adds
 * the decoder of a connection's first frame.
 */
import { type ConnectionKind, CONNECTION_KINDS } from './constants.js';
import { type Decoded, parse } from './codec.js';
import { type ControlOpen, type HealthPing, decodeControlOpen, decodeHealthPing } from './frames-control.js';
import { type SessionAbort, decodeSessionAbort } from './frames-abort.js';
import { type HealthRequest, type IndexPut, type ListRequest, type ReadRequest, decodeHealthRequest, decodeIndexPut, decodeListRequest, decodeReadRequest } from './frames-read.js';
import { type ParallelJoin, decodeParallelJoin } from './frames-parallel.js';
import { type Handshake, type Resume, decodeHandshake, decodeResume } from './frames-session.js';

export type { Decoded, Decoder } from './codec.js';
export * from './frames-session.js';
export * from './frames-parallel.js';
export * from './frames-control.js';
export * from './frames-abort.js';
export * from './frames-read.js';

/** What a client's first frame on a new connection is, decoded whole. */
export type ClientHello =
  | { kind: 'NBKP'; value: Handshake }
  | { kind: 'RSME'; value: Resume }
  | { kind: 'PJIN'; value: ParallelJoin }
  | { kind: 'PING'; value: HealthPing }
  | { kind: 'CTRL'; value: ControlOpen }
  | { kind: 'ABRT'; value: SessionAbort }
  | { kind: 'HLTH'; value: HealthRequest }
  | { kind: 'LIST'; value: ListRequest }
  | { kind: 'READ'; value: ReadRequest }
  | { kind: 'IDXP'; value: IndexPut };


// ─── Connection kind ──────────────────────────────────────────────────────────────────────────

/**
 * What a new connection is, from its first 4 bytes (peek: nothing is consumed, the whole frame
 * is then decoded from the same start). null until 4 bytes are there.
 */
export function decodeConnectionKind(buf: Buffer): ConnectionKind | null {
  const d = parse(buf, 'new connection', (p) => p.magicOf(CONNECTION_KINDS));
  return d === null ? null : d.value;
}

/** A client's whole first frame, whichever kind of connection it opens. */
export function decodeClientHello(buf: Buffer): Decoded<ClientHello> | null {
  const kind = decodeConnectionKind(buf);
  switch (kind) {
    case null:
      return null;
    case 'NBKP':
      return tag(kind, decodeHandshake(buf));
    case 'RSME':
      return tag(kind, decodeResume(buf));
    case 'PJIN':
      return tag(kind, decodeParallelJoin(buf));
    case 'PING':
      return tag(kind, decodeHealthPing(buf));
    case 'CTRL':
      return tag(kind, decodeControlOpen(buf));
    case 'ABRT':
      return tag(kind, decodeSessionAbort(buf));
    case 'HLTH':
      return tag(kind, decodeHealthRequest(buf));
    case 'LIST':
      return tag(kind, decodeListRequest(buf));
    case 'READ':
      return tag(kind, decodeReadRequest(buf));
    case 'IDXP':
      return tag(kind, decodeIndexPut(buf));
  }
}

function tag<K extends ClientHello['kind']>(
  kind: K,
  d: Decoded<Extract<ClientHello, { kind: K }>['value']> | null,
): Decoded<ClientHello> | null {
  return d === null ? null : { value: { kind, value: d.value } as ClientHello, size: d.size };
}

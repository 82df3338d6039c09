// Minimal protobuf wire-format reader and writer (https://protobuf.dev/programming-guides/encoding/).
// Portcullis decodes only the CheckRequest fields it uses and skips the rest without copying;
// this is the reason it can be faster than a server that materialises every field.

const nativeLatin1Slice = (Buffer.prototype as unknown as { latin1Slice?: (start: number, end: number) => string }).latin1Slice;

/** buf[start, end) as latin1, skipping Buffer#toString's argument handling (the hottest call here). */
export function latin1Of(buf: Buffer, start: number, end: number): string {
  if (end - start <= 12) {
    let s = '';
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]!);
    return s;
  }
  return nativeLatin1Slice ? nativeLatin1Slice.call(buf, start, end) : buf.toString('latin1', start, end);
}

/** Slots of the short-string memo (a power of two) and the longest text it keeps. */
const MEMO_SLOTS = 512;
const MEMO_MAX_LENGTH = 40;
const memo: (string | undefined)[] = new Array<string | undefined>(MEMO_SLOTS).fill(undefined);

/**
 * latin1Of for texts that repeat from request to request (header names, method, scheme, protocol,
 * host): the same bytes give back the very same string, so no new string is built, and Map
 * lookups on it find its hash already computed. A direct-mapped memo of MEMO_SLOTS texts of at
 * most MEMO_MAX_LENGTH bytes: bounded whatever clients send; a collision only replaces a slot.
 */
export function repeatedLatin1Of(buf: Buffer, start: number, end: number): string {
  const length = end - start;
  if (length > MEMO_MAX_LENGTH || length === 0) return latin1Of(buf, start, end);
  let h = length;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  const slot = (h ^ (h >>> 15)) & (MEMO_SLOTS - 1);
  const cached = memo[slot];
  if (cached !== undefined && cached.length === length) {
    let i = 0;
    while (i < length && cached.charCodeAt(i) === buf[start + i]) i++;
    if (i === length) return cached;
  }
  const text = latin1Of(buf, start, end);
  memo[slot] = text;
  return text;
}

export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;

/**
 * Reads one message (or a sub-range of a buffer as a nested message). A nested message is read by
 * the same Reader between `enter(end)` and `leave(outer)`: no Reader per nested message, and a
 * CheckRequest nests one per header.
 */
export class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start = 0,
    public end = buf.length,
  ) {
    this.pos = start;
  }

  /** Read the nested message that ends at `end` (from lenEnd()); returns the outer end, for leave(). */
  enter(end: number): number {
    const outer = this.end;
    this.end = end;
    return outer;
  }

  /** Back to the enclosing message, after the nested one was read to its end. */
  leave(outer: number): void {
    this.pos = this.end;
    this.end = outer;
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  /** Next tag; returns field number * 8 + wire type. */
  tag(): number {
    const tag = this.varint32();
    if (tag >>> 3 === 0) throw new WireError('field number 0');
    return tag;
  }

  varint32(): number {
    let result = 0;
    let shift = 0;
    const buf = this.buf;
    while (true) {
      if (this.pos >= this.end) throw new WireError('truncated varint');
      const byte = buf[this.pos++]!;
      if (shift < 32) result |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result >>> 0;
      shift += 7;
      if (shift >= 70) throw new WireError('varint too long');
    }
  }

  /** Length of a LEN field; returns the end offset of its payload. */
  lenEnd(): number {
    const len = this.varint32();
    const end = this.pos + len;
    if (len > 0x7fffffff || end > this.end) throw new WireError('length exceeds message');
    return end;
  }

  /** A string/bytes field as latin1 (byte-preserving, injective: distinct bytes stay distinct). */
  latin1(): string {
    const end = this.lenEnd();
    const s = latin1Of(this.buf, this.pos, end);
    this.pos = end;
    return s;
  }

  /** latin1() for a text that repeats across requests (repeatedLatin1Of). */
  repeatedLatin1(): string {
    const end = this.lenEnd();
    const s = repeatedLatin1Of(this.buf, this.pos, end);
    this.pos = end;
    return s;
  }

  utf8(): string {
    const end = this.lenEnd();
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end;
    return s;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint32();
        return;
      case WIRE_I64:
        this.pos += 8;
        break;
      case WIRE_LEN:
        this.pos = this.lenEnd();
        return;
      case WIRE_I32:
        this.pos += 4;
        break;
      default:
        // Groups (3, 4) are deprecated and never appear in Envoy's API; anything else is garbage.
        throw new WireError(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new WireError('truncated fixed-width field');
  }
}

/** Encoded size of a varint. */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

/** gRPC's length-prefixed message header: compressed flag (1 byte) + big-endian length (4 bytes). */
export const GRPC_FRAME_HEADER = 5;

/**
 * Writes into a buffer sized up front (callers compute sizes first; no growing, no copying).
 * `headroom` bytes are left free in front, for a gRPC frame header written by `finishFrame()`.
 */
export class Writer {
  pos: number;
  readonly buf: Buffer;
  constructor(
    size: number,
    private readonly headroom = 0,
  ) {
    this.buf = Buffer.allocUnsafe(headroom + size);
    this.pos = headroom;
  }

  varint(value: number): void {
    const buf = this.buf;
    while (value >= 0x80) {
      buf[this.pos++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    buf[this.pos++] = value;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  /** A string field whose UTF-8 byte length the caller already computed. */
  string(field: number, value: string, byteLength: number): void {
    this.tag(field, WIRE_LEN);
    this.varint(byteLength);
    if (byteLength === value.length && byteLength <= 64) {
      // Short ASCII: a plain loop beats the native write call.
      const buf = this.buf;
      let pos = this.pos;
      for (let i = 0; i < byteLength; i++) buf[pos++] = value.charCodeAt(i);
      this.pos = pos;
    } else {
      this.pos += this.buf.write(value, this.pos, byteLength, 'utf8');
    }
  }

  raw(bytes: Uint8Array): void {
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  finish(): Buffer {
    if (this.pos !== this.buf.length) throw new WireError(`encoder size mismatch: wrote ${this.pos} of ${this.buf.length}`);
    return this.buf;
  }

  /** The message as one uncompressed gRPC frame (the Writer was made with GRPC_FRAME_HEADER headroom). */
  finishFrame(): Buffer {
    if (this.headroom !== GRPC_FRAME_HEADER) throw new WireError('finishFrame() needs a Writer with gRPC frame headroom');
    const buf = this.finish();
    buf[0] = 0;
    buf.writeUInt32BE(buf.length - GRPC_FRAME_HEADER, 1);
    return buf;
  }
}

/** Size of a LEN field (tag + length prefix + payload). Field numbers here are all < 16. */
export function lenFieldSize(payload: number): number {
  return 1 + varintSize(payload) + payload;
}

import { AUTHENTICATOR_LENGTH, HEADER_LENGTH, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_PACKET_LENGTH, MIN_PACKET_LENGTH } from "./attributes.js";

/**
 * RADIUS packet layout, RFC 2865 section 3 (header) and section 5 (attributes). Written
 * by hand: the format is a 20-octet header and a type-length-value list, the checks must
 * be exactly the RFC's, and every malformed shape must come back as a value, never an
 * exception, because the bytes are whatever anyone on the network sends.
 */

export interface RadiusAttribute {
  type: number;
  value: Buffer;
}

export interface RadiusPacket {
  code: number;
  identifier: number;
  /** 16 octets: the Request Authenticator of a request, the Response Authenticator of a response. */
  authenticator: Buffer;
  /** In packet order; a type may repeat. */
  attributes: RadiusAttribute[];
  /** The packet's own octets, exactly Length of them: padding after Length is not part of the packet. */
  bytes: Buffer;
}

export type DecodeFailure =
  /** Fewer than 20 octets: not even a header. */
  | "shorter-than-header"
  /** The Length field is below 20 or above 4096. */
  | "length-out-of-range"
  /** The datagram holds fewer octets than the Length field says. */
  | "shorter-than-length"
  /** One octet is left where an attribute's Type and Length should be. */
  | "attribute-truncated"
  /** An attribute's Length is 0 or 1: it cannot even cover its own Type and Length. */
  | "attribute-length-below-2"
  /** An attribute's Length runs past the packet's Length. */
  | "attribute-past-end";

export type DecodeResult = { ok: true; packet: RadiusPacket } | { ok: false; reason: DecodeFailure };

/** Reads one datagram. Never throws: a malformed datagram is a value (RFC 2865 section 3: silently discard it). */
export function decodePacket(datagram: Uint8Array): DecodeResult {
  if (datagram.length < HEADER_LENGTH) return { ok: false, reason: "shorter-than-header" };
  const length = (datagram[2]! << 8) | datagram[3]!;
  if (length < MIN_PACKET_LENGTH || length > MAX_PACKET_LENGTH) return { ok: false, reason: "length-out-of-range" };
  // RFC 2865 section 3: "If the packet is shorter than the Length field indicates, it MUST be
  // silently discarded"; "Octets outside the range of the Length field MUST be treated as padding".
  if (datagram.length < length) return { ok: false, reason: "shorter-than-length" };

  // One copy, so the packet outlives the receive buffer; values are views into it.
  const bytes = Buffer.from(datagram.subarray(0, length));
  const attributes: RadiusAttribute[] = [];
  let offset = HEADER_LENGTH;
  while (offset < length) {
    if (offset + 2 > length) return { ok: false, reason: "attribute-truncated" };
    const attributeLength = bytes[offset + 1]!;
    if (attributeLength < 2) return { ok: false, reason: "attribute-length-below-2" };
    if (offset + attributeLength > length) return { ok: false, reason: "attribute-past-end" };
    attributes.push({ type: bytes[offset]!, value: bytes.subarray(offset + 2, offset + attributeLength) });
    offset += attributeLength;
  }
  return {
    ok: true,
    packet: {
      code: bytes[0]!,
      identifier: bytes[1]!,
      authenticator: bytes.subarray(4, HEADER_LENGTH),
      attributes,
      bytes,
    },
  };
}

export interface PacketToEncode {
  code: number;
  identifier: number;
  authenticator: Uint8Array;
  attributes: readonly RadiusAttribute[];
}

/**
 * Writes a packet. Throws RangeError only on a caller's bug (a field out of range, a value
 * over 253 octets, a packet over 4096 octets): every input from the network goes through
 * decodePacket instead.
 */
export function encodePacket(packet: PacketToEncode): Buffer {
  const { code, identifier, authenticator, attributes } = packet;
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new RangeError(`RADIUS code ${code} is not an octet`);
  if (!Number.isInteger(identifier) || identifier < 0 || identifier > 255) throw new RangeError(`RADIUS identifier ${identifier} is not an octet`);
  if (authenticator.length !== AUTHENTICATOR_LENGTH) throw new RangeError(`RADIUS authenticator is ${authenticator.length} octets, not ${AUTHENTICATOR_LENGTH}`);
  let length = HEADER_LENGTH;
  for (const { type, value } of attributes) {
    if (!Number.isInteger(type) || type < 1 || type > 255) throw new RangeError(`RADIUS attribute type ${type} is not 1..255`);
    if (value.length > MAX_ATTRIBUTE_VALUE_LENGTH) throw new RangeError(`RADIUS attribute ${type} is ${value.length} octets; at most ${MAX_ATTRIBUTE_VALUE_LENGTH} fit`);
    length += 2 + value.length;
  }
  if (length > MAX_PACKET_LENGTH) throw new RangeError(`RADIUS packet would be ${length} octets; at most ${MAX_PACKET_LENGTH} are allowed`);

  const bytes = Buffer.alloc(length);
  bytes[0] = code;
  bytes[1] = identifier;
  bytes.writeUInt16BE(length, 2);
  bytes.set(authenticator, 4);
  let offset = HEADER_LENGTH;
  for (const { type, value } of attributes) {
    bytes[offset] = type;
    bytes[offset + 1] = 2 + value.length;
    bytes.set(value, offset + 2);
    offset += 2 + value.length;
  }
  return bytes;
}

/** The first value of an attribute type, or null when the packet has none. */
export function firstAttribute(packet: Pick<RadiusPacket, "attributes">, type: number): Buffer | null {
  return packet.attributes.find((attribute) => attribute.type === type)?.value ?? null;
}

/** Every value of an attribute type, in packet order. */
export function allAttributes(packet: Pick<RadiusPacket, "attributes">, type: number): Buffer[] {
  return packet.attributes.filter((attribute) => attribute.type === type).map((attribute) => attribute.value);
}

/** An attribute's value as text (RFC 2865 section 5: "text" is UTF-8), or null when absent. */
export function textAttribute(packet: Pick<RadiusPacket, "attributes">, type: number): string | null {
  return firstAttribute(packet, type)?.toString("utf8") ?? null;
}

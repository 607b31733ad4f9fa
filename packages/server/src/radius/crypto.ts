import { createHash, createHmac } from "node:crypto";
import { Attribute, AUTHENTICATOR_LENGTH, HEADER_LENGTH, MESSAGE_AUTHENTICATOR_LENGTH, type ResponseCode } from "./attributes.js";
import { decodePacket, encodePacket, type RadiusAttribute, type RadiusPacket } from "./codec.js";

/**
 * The RADIUS shared-secret crypto: PAP password hiding (RFC 2865 section 5.2), the Response
 * Authenticator (RFC 2865 section 3) and Message-Authenticator (RFC 3579 section 3.2). MD5
 * and HMAC-MD5 are what the protocol fixes; node:crypto provides both.
 */

/**
 * Digests come out as "binary" (latin1) strings, one character an octet, copied into the
 * packet or compared from there: a digest returned as a Buffer costs more than the hash
 * itself (its memory made natively and later freed by the garbage collector), and every
 * request takes four of them.
 */
const md5 = (...parts: Uint8Array[]): string => {
  const hash = createHash("md5");
  for (const part of parts) hash.update(part);
  return hash.digest("binary");
};

/** Writes a digest (a latin1 string, as md5 and computeMessageAuthenticator give it) into `target` at `offset`. */
function writeDigest(target: Buffer, offset: number, digest: string): void {
  target.write(digest, offset, digest.length, "latin1");
}

/** Whether the octets of `given` are those of the latin1 `digest`, compared in constant time. */
function digestEquals(digest: string, given: Uint8Array): boolean {
  if (digest.length !== given.length) return false;
  let difference = 0;
  for (let i = 0; i < given.length; i++) difference |= digest.charCodeAt(i) ^ given[i]!;
  return difference === 0;
}

/** RFC 2865 section 5.2: the hidden password is 16 to 128 octets, a multiple of 16. */
const PASSWORD_BLOCK = 16;
const MAX_HIDDEN_PASSWORD_LENGTH = 128;

export type PasswordFailure = "length-not-multiple-of-16" | "length-out-of-range";

/**
 * RFC 2865 section 5.2: p(i) = c(i) xor MD5(S + c(i-1)), with c(0) the Request Authenticator;
 * the trailing NUL padding is removed.
 */
export function decryptUserPassword(
  encrypted: Uint8Array,
  secret: Uint8Array,
  requestAuthenticator: Uint8Array,
): { ok: true; password: Buffer } | { ok: false; reason: PasswordFailure } {
  if (encrypted.length % PASSWORD_BLOCK !== 0) return { ok: false, reason: "length-not-multiple-of-16" };
  if (encrypted.length < PASSWORD_BLOCK || encrypted.length > MAX_HIDDEN_PASSWORD_LENGTH) return { ok: false, reason: "length-out-of-range" };
  const plain = Buffer.alloc(encrypted.length);
  let previous = requestAuthenticator;
  for (let offset = 0; offset < encrypted.length; offset += PASSWORD_BLOCK) {
    const block = encrypted.subarray(offset, offset + PASSWORD_BLOCK);
    const pad = md5(secret, previous);
    for (let i = 0; i < PASSWORD_BLOCK; i++) plain[offset + i] = block[i]! ^ pad.charCodeAt(i);
    previous = block;
  }
  let end = plain.length;
  while (end > 0 && plain[end - 1] === 0) end--;
  return { ok: true, password: plain.subarray(0, end) };
}

/** RFC 2865 section 5.2, the client's side; Tessera uses it in tests. Throws on a password over 128 octets. */
export function encryptUserPassword(password: Uint8Array | string, secret: Uint8Array, requestAuthenticator: Uint8Array): Buffer {
  const plainText = typeof password === "string" ? Buffer.from(password, "utf8") : password;
  if (plainText.length > MAX_HIDDEN_PASSWORD_LENGTH) throw new RangeError(`a PAP password is at most ${MAX_HIDDEN_PASSWORD_LENGTH} octets`);
  const padded = Buffer.alloc(Math.max(PASSWORD_BLOCK, Math.ceil(plainText.length / PASSWORD_BLOCK) * PASSWORD_BLOCK));
  padded.set(plainText);
  const hidden = Buffer.alloc(padded.length);
  let previous: Uint8Array = requestAuthenticator;
  for (let offset = 0; offset < padded.length; offset += PASSWORD_BLOCK) {
    const pad = md5(secret, previous);
    for (let i = 0; i < PASSWORD_BLOCK; i++) hidden[offset + i] = padded[offset + i]! ^ pad.charCodeAt(i);
    previous = hidden.subarray(offset, offset + PASSWORD_BLOCK);
  }
  return hidden;
}

/**
 * RFC 2865 section 3: ResponseAuth = MD5(Code + ID + Length + RequestAuth + Attributes + Secret).
 * `response` is the encoded response; whatever its authenticator field holds is replaced by
 * the request's.
 */
export function responseAuthenticator(response: Uint8Array, requestAuthenticator: Uint8Array, secret: Uint8Array): Buffer {
  return Buffer.from(responseAuthenticatorDigest(response, requestAuthenticator, secret), "latin1");
}

function responseAuthenticatorDigest(response: Uint8Array, requestAuthenticator: Uint8Array, secret: Uint8Array): string {
  return md5(response.subarray(0, 4), requestAuthenticator, response.subarray(HEADER_LENGTH), secret);
}

/** Where each Message-Authenticator value starts in packet.bytes. */
function messageAuthenticatorOffsets(packet: RadiusPacket): { offset: number; length: number }[] {
  const found: { offset: number; length: number }[] = [];
  let offset = HEADER_LENGTH;
  for (const attribute of packet.attributes) {
    if (attribute.type === Attribute.MessageAuthenticator) found.push({ offset: offset + 2, length: attribute.value.length });
    offset += 2 + attribute.value.length;
  }
  return found;
}

const ZERO_MESSAGE_AUTHENTICATOR = new Uint8Array(MESSAGE_AUTHENTICATOR_LENGTH);

/** RFC 3579 section 3.2: HMAC-MD5 keyed by the secret over the packet, its Message-Authenticator value as 16 zero octets. */
function computeMessageAuthenticator(packet: Uint8Array, valueOffset: number, secret: Uint8Array): string {
  return createHmac("md5", secret)
    .update(packet.subarray(0, valueOffset))
    .update(ZERO_MESSAGE_AUTHENTICATOR)
    .update(packet.subarray(valueOffset + MESSAGE_AUTHENTICATOR_LENGTH))
    .digest("binary");
}

export type MessageAuthenticatorFailure =
  /** The bytes are not a RADIUS packet at all. */
  | "malformed"
  /** No Message-Authenticator: Tessera requires one on every Access-Request (BlastRADIUS). */
  | "missing"
  /** RFC 2869's attribute table (section 5.19) allows at most one Message-Authenticator. */
  | "repeated"
  /** RFC 3579 section 3.2: the value is 16 octets. */
  | "wrong-length"
  /** Wrong secret, or the packet was changed on the way. */
  | "mismatch";

/**
 * Checks an Access-Request's Message-Authenticator (RFC 3579 section 3.2: over the request as
 * sent, Request Authenticator included). Compares in constant time.
 */
export function verifyRequestMessageAuthenticator(
  packetBytes: Uint8Array,
  secret: Uint8Array,
): { ok: true } | { ok: false; reason: MessageAuthenticatorFailure } {
  const decoded = decodePacket(packetBytes);
  if (!decoded.ok) return { ok: false, reason: "malformed" };
  return verifyPacketMessageAuthenticator(decoded.packet, secret);
}

/** The same check on a packet already decoded (the server decodes each datagram once). */
export function verifyPacketMessageAuthenticator(packet: RadiusPacket, secret: Uint8Array): { ok: true } | { ok: false; reason: MessageAuthenticatorFailure } {
  const found = messageAuthenticatorOffsets(packet);
  if (found.length === 0) return { ok: false, reason: "missing" };
  if (found.length > 1) return { ok: false, reason: "repeated" };
  const { offset, length } = found[0]!;
  if (length !== MESSAGE_AUTHENTICATOR_LENGTH) return { ok: false, reason: "wrong-length" };
  const expected = computeMessageAuthenticator(packet.bytes, offset, secret);
  const given = packet.bytes.subarray(offset, offset + MESSAGE_AUTHENTICATOR_LENGTH);
  return digestEquals(expected, given) ? { ok: true } : { ok: false, reason: "mismatch" };
}

export interface ResponseToSign {
  code: ResponseCode;
  identifier: number;
  /** The reply's attributes in order; a Message-Authenticator among them is dropped, the signed one goes first. */
  attributes: readonly RadiusAttribute[];
}

/**
 * Encodes and signs a response. Message-Authenticator goes FIRST, as the BlastRADIUS
 * mitigation asks (the July 2024 advisory, draft-ietf-radext-deprecating-radius): the
 * attack forges an Access-Accept by an MD5 chosen-prefix collision on the Response
 * Authenticator, and a prefix that starts with an HMAC keyed by the secret cannot be
 * chosen or predicted by the attacker. RFC 3579 section 3.2 computes it with
 * the Request Authenticator in the authenticator field; the Response Authenticator (RFC 2865
 * section 3) is computed afterwards, over the finished Message-Authenticator.
 */
export function signResponse(response: ResponseToSign, requestAuthenticator: Uint8Array, secret: Uint8Array): Buffer {
  if (requestAuthenticator.length !== AUTHENTICATOR_LENGTH) throw new RangeError("a Request Authenticator is 16 octets");
  const attributes: RadiusAttribute[] = [
    { type: Attribute.MessageAuthenticator, value: Buffer.alloc(MESSAGE_AUTHENTICATOR_LENGTH) },
    ...response.attributes.filter((attribute) => attribute.type !== Attribute.MessageAuthenticator),
  ];
  const bytes = encodePacket({ code: response.code, identifier: response.identifier, authenticator: requestAuthenticator, attributes });
  const valueOffset = HEADER_LENGTH + 2;
  writeDigest(bytes, valueOffset, computeMessageAuthenticator(bytes, valueOffset, secret));
  writeDigest(bytes, 4, responseAuthenticatorDigest(bytes, requestAuthenticator, secret));
  return bytes;
}

export type ResponseFailure = "malformed" | "bad-response-authenticator" | MessageAuthenticatorFailure;

/**
 * A client's check of a response (RFC 2865 section 3, RFC 3579 section 3.2); Tessera's own
 * tests use it, and it documents what a NAS does with what signResponse makes.
 */
export function verifyResponse(
  responseBytes: Uint8Array,
  requestAuthenticator: Uint8Array,
  secret: Uint8Array,
): { ok: true; packet: RadiusPacket } | { ok: false; reason: ResponseFailure } {
  const decoded = decodePacket(responseBytes);
  if (!decoded.ok) return { ok: false, reason: "malformed" };
  const { packet } = decoded;
  if (!digestEquals(responseAuthenticatorDigest(packet.bytes, requestAuthenticator, secret), packet.authenticator)) return { ok: false, reason: "bad-response-authenticator" };
  const asSigned = Buffer.from(packet.bytes);
  asSigned.set(requestAuthenticator, 4);
  const messageAuthenticator = verifyRequestMessageAuthenticator(asSigned, secret);
  return messageAuthenticator.ok ? { ok: true, packet } : messageAuthenticator;
}

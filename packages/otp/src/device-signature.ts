// Device request signing: after enrollment the `tessera` app signs each request (and its
// push answers) with its ECDSA P-256 key, so the server knows which device sent it.
import { decodeBase64url, encodeBase64url } from "./base64url.js";
import { sha256, subtle, utf8 } from "./webcrypto.js";
import type { WebCryptoKey } from "./webcrypto.js";

/** First line of every canonical request; a new format gets a new version. */
export const CANONICAL_REQUEST_VERSION = "tessera-request-v1";

const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

export interface SignedRequestFields {
  /** HTTP method; upper-cased in the canonical form. */
  method: string;
  /** The request target as sent: path and query string, e.g. "/api/v1/devices/poll?wait=30". */
  path: string;
  /** `sha256Base64url` of the exact body bytes; of the empty string when there is no body. */
  bodySha256Base64url: string;
  /** When the device signed, in milliseconds since the Unix epoch. */
  timestampMs: number;
  deviceId: string;
}

/**
 * The string a device signs, six lines joined by "\n" with no trailing newline:
 *
 *     tessera-request-v1
 *     METHOD
 *     path
 *     bodySha256Base64url
 *     timestampMs (decimal)
 *     deviceId
 *
 * No field may contain a line break, so the lines cannot be shifted into each other.
 * Inputs come from the caller (the server computes the body hash itself, and HTTP
 * cannot carry a line break in a path or header), so a line break is a bug and throws.
 */
export function canonicalRequest(fields: SignedRequestFields): string {
  const { method, path, bodySha256Base64url, timestampMs, deviceId } = fields;
  if (!Number.isSafeInteger(timestampMs) || timestampMs < 0) {
    throw new RangeError(`timestampMs must be a non-negative whole number, got ${timestampMs}`);
  }
  const lines = [CANONICAL_REQUEST_VERSION, method.toUpperCase(), path, bodySha256Base64url, String(timestampMs), deviceId];
  if (lines.some((line) => /[\r\n]/.test(line))) throw new RangeError("canonical request fields must not contain line breaks");
  return lines.join("\n");
}

/** ECDSA P-256 with SHA-256; the signature is r || s (IEEE P1363, 64 bytes), base64url. */
export async function signRequest(privateKey: WebCryptoKey, canonical: string): Promise<string> {
  return encodeBase64url(new Uint8Array(await subtle().sign(ECDSA_SHA256, privateKey, utf8(canonical))));
}

/** True only for a valid signature; any malformed input is false, never a throw. */
export async function verifySignature(publicKey: WebCryptoKey, canonical: string, signatureBase64url: string): Promise<boolean> {
  const signature = decodeBase64url(signatureBase64url);
  if (!signature || signature.length !== 64) return false;
  try {
    return await subtle().verify(ECDSA_SHA256, publicKey, signature, utf8(canonical));
  } catch {
    return false;
  }
}

/** SHA-256 of bytes, or of the UTF-8 of a string, in base64url. */
export async function sha256Base64url(data: Uint8Array | string): Promise<string> {
  return encodeBase64url(await sha256(data));
}

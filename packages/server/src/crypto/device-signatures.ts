import { createHash, createPublicKey, verify, type KeyObject } from "node:crypto";

/**
 * The server's side of device request signatures (ECDSA P-256 with SHA-256, r || s,
 * over the canonical request of @tessera/otp), on node:crypto. The device signs with
 * WebCrypto; verifying here synchronously, with each device's key parsed once, keeps a
 * push approval from waiting on WebCrypto's thread pool twice (key import, verify) and
 * on a SHA-256 of the body there. Tests check both sides against each other.
 */
const KEY_CACHE_SIZE = 10_000;

/** A device key in `exportPublicKey` form (base64url of the uncompressed point); null when unusable. */
function parsePublicKey(publicKeyBase64url: string): KeyObject | null {
  const point = Buffer.from(publicKeyBase64url, "base64url");
  if (point.length !== 65 || point[0] !== 4) return null;
  try {
    return createPublicKey({ key: { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url") }, format: "jwk" });
  } catch {
    return null;
  }
}

/** Checks device signatures, keeping the parsed keys of the last 10,000 devices. */
export function createDeviceSignatureVerifier() {
  const keys = new Map<string, KeyObject | null>();
  const publicKeyOf = (publicKeyBase64url: string): KeyObject | null => {
    const cached = keys.get(publicKeyBase64url);
    if (cached !== undefined) return cached;
    const key = parsePublicKey(publicKeyBase64url);
    // Oldest first out: a Map keeps insertion order.
    if (keys.size >= KEY_CACHE_SIZE) keys.delete(keys.keys().next().value as string);
    keys.set(publicKeyBase64url, key);
    return key;
  };

  /** True only for a valid signature by this key; malformed keys or signatures are false, never a throw. */
  return function verifyDeviceSignature(publicKeyBase64url: string, canonical: string, signatureBase64url: string): boolean {
    const key = publicKeyOf(publicKeyBase64url);
    const signature = Buffer.from(signatureBase64url, "base64url");
    if (!key || signature.length !== 64 || signature.toString("base64url") !== signatureBase64url) return false;
    try {
      return verify("sha256", Buffer.from(canonical, "utf8"), { key, dsaEncoding: "ieee-p1363" }, signature);
    } catch {
      return false;
    }
  };
}

/** SHA-256 of the exact body, base64url: the canonical request's third line. */
export function bodyDigest(body: string): string {
  return createHash("sha256").update(body, "utf8").digest("base64url");
}

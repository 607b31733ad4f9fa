// The enrollment key agreement of DESIGN section 3.4, run by the server and by the
// `tessera` app alike: each side has an ECDH P-256 key pair, they exchange public keys,
// and both derive the OTP key with HKDF-SHA256 over the shared secret, bound to the
// token's serial and the enrollment code. The OTP key itself never travels.
import { encodeBase32 } from "./base32.js";
import { decodeBase64url, encodeBase64url } from "./base64url.js";
import type { OtpAlgorithm } from "./otp.js";
import { sha256, subtle, utf8 } from "./webcrypto.js";
import type { WebCryptoKey, WebCryptoKeyPair } from "./webcrypto.js";

const AGREEMENT = { name: "ECDH", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", namedCurve: "P-256" } as const;

/** HKDF `info` is this prefix followed by the serial; "v1" changes if the derivation does. */
export const TOKEN_KEY_INFO_PREFIX = "tessera-otp-key-v1\0";

/** RFC 4226 section 4 and RFC 6238 section 5.1: a key as long as the HMAC's output. */
export const TOKEN_KEY_BYTES: Record<OtpAlgorithm, number> = { SHA1: 20, SHA256: 32, SHA512: 64 };

export interface EnrollmentKeys {
  /** ECDH P-256, for deriving the OTP key. */
  agreement: WebCryptoKeyPair;
  /** ECDSA P-256, with which the device signs its requests and push answers. */
  signing: WebCryptoKeyPair;
}

/**
 * Generates a device's (or the server's) enrollment key pairs. Public keys are always
 * exportable; private keys only with `extractable: true`, e.g. for a CLI that keeps them
 * in a file. A browser stores non-extractable keys in IndexedDB as they are.
 */
export async function generateEnrollmentKeys({ extractable = false }: { extractable?: boolean } = {}): Promise<EnrollmentKeys> {
  const [agreement, signing] = await Promise.all([
    subtle().generateKey(AGREEMENT, extractable, ["deriveBits"]),
    subtle().generateKey(SIGNING, extractable, ["sign", "verify"]),
  ]);
  return { agreement, signing };
}

/** The public key as an uncompressed SEC 1 point (0x04 || x || y, 65 bytes), base64url. */
export async function exportPublicKey(key: WebCryptoKey): Promise<string> {
  return encodeBase64url(new Uint8Array(await subtle().exportKey("raw", key)));
}

export type ImportPublicKeyResult = { ok: true; key: WebCryptoKey } | { ok: false; reason: "malformed" };

/** Imports a peer's ECDH public key from `exportPublicKey` form; bad input is a value, not a throw. */
export function importAgreementPublicKey(publicKeyBase64url: string): Promise<ImportPublicKeyResult> {
  return importP256PublicKey(publicKeyBase64url, AGREEMENT, []);
}

/** Imports a device's ECDSA public key from `exportPublicKey` form, for `verifySignature`. */
export function importSigningPublicKey(publicKeyBase64url: string): Promise<ImportPublicKeyResult> {
  return importP256PublicKey(publicKeyBase64url, SIGNING, ["verify"]);
}

async function importP256PublicKey(
  publicKeyBase64url: string,
  algorithm: typeof AGREEMENT | typeof SIGNING,
  usages: Array<"verify">,
): Promise<ImportPublicKeyResult> {
  const point = decodeBase64url(publicKeyBase64url);
  // Only the uncompressed form: not every browser imports compressed points.
  if (!point || point.length !== 65 || point[0] !== 0x04) return { ok: false, reason: "malformed" };
  try {
    // WebCrypto checks that the point is on the curve (invalid-curve attacks).
    return { ok: true, key: await subtle().importKey("raw", point, algorithm, true, usages) };
  } catch {
    return { ok: false, reason: "malformed" };
  }
}

export interface DeriveTokenKeyOptions {
  /** Own ECDH private key. */
  privateKey: WebCryptoKey;
  /** The other side's ECDH public key. */
  peerPublicKey: WebCryptoKey;
  /** The token's serial, e.g. "MP0000000017". */
  serial: string;
  /** The enrollment code exactly as provisioning generated it (upper-case base32). */
  enrollmentCode: string;
  /** The token's HMAC algorithm; it sets the key length. */
  algorithm: OtpAlgorithm;
}

/**
 * OTP key = HKDF-SHA256(IKM = ECDH shared secret (32 bytes, the x coordinate),
 *                       salt = SHA-256(UTF-8(enrollmentCode)),
 *                       info = UTF-8("tessera-otp-key-v1\0" + serial),
 *                       L = 20 / 32 / 64 bytes for SHA1 / SHA256 / SHA512).
 * Binding the code means only the holder of this enrollment's code derives this key;
 * binding the serial means one agreement cannot be reused for another token.
 */
export async function deriveTokenKey(options: DeriveTokenKeyOptions): Promise<Uint8Array> {
  const { privateKey, peerPublicKey, serial, enrollmentCode, algorithm } = options;
  const shared = await subtle().deriveBits({ name: "ECDH", public: peerPublicKey }, privateKey, 256);
  const inputKey = await subtle().importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const derived = await subtle().deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: await sha256(enrollmentCode), info: utf8(TOKEN_KEY_INFO_PREFIX + serial) },
    inputKey,
    TOKEN_KEY_BYTES[algorithm] * 8,
  );
  return new Uint8Array(derived);
}

/** A random code in base32 (no padding); 16 bytes give the 128-bit enrollment codes. */
export function randomCode(bytes = 16): string {
  if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 65536) {
    throw new RangeError(`randomCode takes 1 to 65536 bytes, got ${bytes}`);
  }
  return encodeBase32(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));
}

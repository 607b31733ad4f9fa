import { createHmac } from "node:crypto";
import type { HotpGenerator } from "@tessera/otp";

const HASHES = { SHA1: "sha1", SHA256: "sha256", SHA512: "sha512" } as const;
const MODULUS = { 6: 1_000_000, 8: 100_000_000 } as const;

/**
 * RFC 4226 section 5.3 on node:crypto's HMAC: the same digits as `hotp` from
 * @tessera/otp (which runs in browsers too, through `otpauth`), for a third of its cost.
 * Every login computes one to three of these, and a HOTP look-ahead eleven.
 */
export const nodeHotp: HotpGenerator = (key, { counter, digits, algorithm }) => {
  if (!Number.isSafeInteger(counter) || counter < 0) throw new RangeError(`HOTP counter must be a non-negative safe integer, got ${counter}`);
  const moving = Buffer.alloc(8);
  moving.writeUInt32BE(Math.floor(counter / 0x1_0000_0000), 0);
  moving.writeUInt32BE(counter >>> 0, 4);
  // As a "binary" (latin1) string, one character an octet: a digest returned as a Buffer costs
  // more than the HMAC itself (a backing store made natively, and freed by the GC).
  const digest = createHmac(HASHES[algorithm], key).update(moving).digest("binary");
  const offset = digest.charCodeAt(digest.length - 1) & 0x0f;
  const truncated = ((digest.charCodeAt(offset) & 0x7f) << 24) | (digest.charCodeAt(offset + 1) << 16) | (digest.charCodeAt(offset + 2) << 8) | digest.charCodeAt(offset + 3);
  return String(truncated % MODULUS[digits]).padStart(digits, "0");
};

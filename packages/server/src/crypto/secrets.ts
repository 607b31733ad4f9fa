import { createHash, timingSafeEqual } from "node:crypto";

// API keys (operators' and applications') and session tokens are 256-bit random
// secrets: a fast hash is enough to keep the database from holding usable credentials
// (argon2 is for human passwords).
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** Compares two hex hashes without leaking through timing where they differ. */
export function sameHash(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

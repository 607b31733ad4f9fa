import { createHash } from "node:crypto";
import { encodeBase32 } from "@tessera/otp";
import { pooledRandomBytes } from "../../ids.js";

/**
 * Enrollment codes: 128 random bits in base32 (26 characters, safe in a URL and easy to
 * read aloud), single use. Only their SHA-256 is stored: the database never holds a
 * code that could enroll a device.
 */
export function newEnrollmentCode(): string {
  return encodeBase32(pooledRandomBytes(16));
}

export function hashEnrollmentCode(code: string): string {
  return createHash("sha256").update(code.trim().toUpperCase()).digest("hex");
}

/** Codes as they appear in links: 26 base32 letters. Anything else is refused before a lookup. */
export function isWellFormedCode(code: string): boolean {
  return /^[A-Z2-7]{26}$/.test(code.trim().toUpperCase());
}

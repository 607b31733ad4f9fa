/**
 * What a hardware token seed file yields, whatever its format. The parsers are pure:
 * they read text and return seeds or problems, and never touch storage, so an import
 * can show every problem in a file before anything is written.
 */

export type OtpMode = "totp" | "hotp";
export type HashAlgorithm = "SHA1" | "SHA256" | "SHA512";

export interface ImportedSeed {
  serial: string;
  secret: Buffer;
  otpMode: OtpMode;
  digits: 6 | 8;
  /** TOTP time step; 30 for HOTP seeds, where it is unused. */
  periodSeconds: number;
  algorithm: HashAlgorithm;
  /** HOTP moving factor; 0 for TOTP seeds. */
  counter: number;
}

export interface SeedProblem {
  /** 1-based line in the file, when the format has lines (CSV). */
  line?: number;
  serial?: string;
  problem: string;
}

/** All-or-nothing: one problem anywhere and no seed is returned. */
export type SeedFileResult = { ok: true; seeds: ImportedSeed[] } | { ok: false; problems: SeedProblem[] };

/**
 * RFC 4226 section 4, requirement R6: the shared secret MUST be at least 128 bits
 * (160 recommended). Vendors mostly ship 160-bit seeds; shorter ones are refused.
 */
export const MIN_SECRET_BYTES = 16;

/** RFC 6238 section 5.2 recommends a 30-second time step. */
export const DEFAULT_PERIOD_SECONDS = 30;
export const MIN_PERIOD_SECONDS = 10;
export const MAX_PERIOD_SECONDS = 300;

const HARDWARE_SERIAL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Tessera generates "MP…" (mobile) and "EM…" (email) serials itself; a seed file may not claim one. */
const GENERATED_SERIAL = /^(MP|EM)\d+$/;

/** Returns why `serial` cannot name a hardware token, or null when it can. */
export function validateSerial(serial: string): string | null {
  if (serial === "") return "the serial is empty";
  if (!HARDWARE_SERIAL.test(serial)) {
    return "a serial is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit";
  }
  if (GENERATED_SERIAL.test(serial)) return "MP and EM followed by digits are reserved for generated serials";
  return null;
}

/** Returns why `secret` cannot be an OTP seed, or null when it can. */
export function validateSecret(secret: Uint8Array): string | null {
  if (secret.length === 0) return "the secret is empty";
  if (secret.length < MIN_SECRET_BYTES) {
    return `the secret is ${secret.length * 8} bits; at least ${MIN_SECRET_BYTES * 8} are required (RFC 4226 section 4)`;
  }
  return null;
}

/**
 * Reads the hash names vendors write: "SHA1", "sha256", "HMAC-SHA-256", "HmacSHA512".
 * Returns null for anything else, so an unknown hash is refused rather than guessed.
 */
export function parseHashAlgorithm(text: string): HashAlgorithm | null {
  const name = text.toUpperCase().replace(/[\s_-]/g, "").replace(/^HMAC/, "");
  return name === "SHA1" || name === "SHA256" || name === "SHA512" ? name : null;
}

/** Decimal digits only (no sign, exponent or fraction) and exactly representable. */
export function parseNonNegativeInteger(text: string): number | null {
  if (!/^\d+$/.test(text)) return null;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : null;
}

/** The TOTP time step, in seconds, within the range Tessera accepts; null otherwise. */
export function parsePeriod(text: string): number | null {
  const value = parseNonNegativeInteger(text);
  return value !== null && value >= MIN_PERIOD_SECONDS && value <= MAX_PERIOD_SECONDS ? value : null;
}

export const PERIOD_RANGE_TEXT = `${MIN_PERIOD_SECONDS} to ${MAX_PERIOD_SECONDS} seconds`;

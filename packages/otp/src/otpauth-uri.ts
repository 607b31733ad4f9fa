// otpauth:// URIs in the Key Uri Format of Google Authenticator
// (https://github.com/google/google-authenticator/wiki/Key-Uri-Format), the format
// every OTP app scans from a QR code: otpauth://TYPE/ISSUER:ACCOUNT?secret=...&issuer=...
import { decodeBase32, encodeBase32 } from "./base32.js";
import type { OtpAlgorithm, OtpDigits } from "./otp.js";

interface OtpauthCommon {
  /** Who issued the token, shown above the code; "" for none. */
  issuer: string;
  account: string;
  secret: Uint8Array;
  algorithm: OtpAlgorithm;
  digits: OtpDigits;
}

/** What `buildOtpauthUri` takes: the period defaults to 30 seconds, the counter to 0. */
export type OtpauthUriInput = OtpauthCommon &
  ({ type: "totp"; periodSeconds?: number } | { type: "hotp"; counter?: number });

/** What `parseOtpauthUri` gives, with the format's defaults filled in. */
export type OtpauthUri = OtpauthCommon & ({ type: "totp"; periodSeconds: number } | { type: "hotp"; counter: number });

export type OtpauthUriProblem =
  | "not-otpauth"
  | "unknown-type"
  | "bad-label"
  | "issuer-mismatch"
  | "missing-secret"
  | "bad-secret"
  | "bad-algorithm"
  | "bad-digits"
  | "bad-period"
  | "bad-counter";

export type ParseOtpauthUriResult = { ok: true; value: OtpauthUri } | { ok: false; problem: OtpauthUriProblem };

/**
 * Builds the URI with every parameter explicit, although some apps have defaults for
 * them: apps that ignore a parameter then fail visibly instead of showing wrong codes.
 * Label parts and the issuer are percent-encoded with %20 for spaces, as the format
 * asks (not "+", which some apps show literally).
 */
export function buildOtpauthUri(input: OtpauthUriInput): string {
  const label = input.issuer
    ? `${encodeURIComponent(input.issuer)}:${encodeURIComponent(input.account)}`
    : encodeURIComponent(input.account);
  const parameters = [`secret=${encodeBase32(input.secret)}`];
  if (input.issuer) parameters.push(`issuer=${encodeURIComponent(input.issuer)}`);
  parameters.push(`algorithm=${input.algorithm}`, `digits=${input.digits}`);
  if (input.type === "totp") {
    const periodSeconds = input.periodSeconds ?? 30;
    if (!Number.isSafeInteger(periodSeconds) || periodSeconds <= 0) {
      throw new RangeError(`period must be a positive whole number of seconds, got ${periodSeconds}`);
    }
    parameters.push(`period=${periodSeconds}`);
  } else {
    const counter = input.counter ?? 0;
    if (!Number.isSafeInteger(counter) || counter < 0) {
      throw new RangeError(`counter must be a non-negative safe integer, got ${counter}`);
    }
    parameters.push(`counter=${counter}`);
  }
  return `otpauth://${input.type}/${label}?${parameters.join("&")}`;
}

/**
 * Parses a URI scanned or pasted from elsewhere, accepting what the format allows
 * (an encoded or literal label colon, spaces after it, lower-case type and algorithm,
 * a secret with padding) and refusing what this service cannot run.
 */
export function parseOtpauthUri(uri: string): ParseOtpauthUriResult {
  const match = /^otpauth:\/\/([^/?#]*)\/([^?#]*)(?:\?([^#]*))?(?:#.*)?$/i.exec(uri.trim());
  if (!match) return { ok: false, problem: "not-otpauth" };
  const type = (match[1] ?? "").toLowerCase();
  if (type !== "totp" && type !== "hotp") return { ok: false, problem: "unknown-type" };

  const label = splitLabel(match[2] ?? "");
  if (!label) return { ok: false, problem: "bad-label" };
  const query = new URLSearchParams(match[3] ?? "");

  const issuerParameter = query.get("issuer");
  if (issuerParameter !== null && label.issuer !== null && issuerParameter !== label.issuer) {
    return { ok: false, problem: "issuer-mismatch" };
  }
  const issuer = issuerParameter ?? label.issuer ?? "";

  const secretText = query.get("secret");
  if (!secretText) return { ok: false, problem: "missing-secret" };
  const secret = decodeBase32(secretText);
  if (!secret || secret.length === 0) return { ok: false, problem: "bad-secret" };

  const algorithm = (query.get("algorithm") ?? "SHA1").toUpperCase();
  if (algorithm !== "SHA1" && algorithm !== "SHA256" && algorithm !== "SHA512") {
    return { ok: false, problem: "bad-algorithm" };
  }
  const digitsText = query.get("digits") ?? "6";
  if (digitsText !== "6" && digitsText !== "8") return { ok: false, problem: "bad-digits" };
  const digits: OtpDigits = digitsText === "6" ? 6 : 8;
  const common = { issuer, account: label.account, secret, algorithm, digits } as const;

  if (type === "totp") {
    const periodSeconds = parseWholeNumber(query.get("period") ?? "30");
    if (periodSeconds === null || periodSeconds === 0) return { ok: false, problem: "bad-period" };
    return { ok: true, value: { ...common, type, periodSeconds } };
  }
  // The counter is required for HOTP: guessing 0 would desynchronise a used token.
  const counter = parseWholeNumber(query.get("counter") ?? "");
  if (counter === null) return { ok: false, problem: "bad-counter" };
  return { ok: true, value: { ...common, type, counter } };
}

/**
 * Splits "issuer:account" at the first literal colon, else at the first encoded one,
 * so an issuer whose own colon was percent-encoded survives.
 */
function splitLabel(raw: string): { issuer: string | null; account: string } | null {
  let issuer: string | null = null;
  let account: string | null;
  const literal = raw.indexOf(":");
  if (literal >= 0) {
    issuer = safeDecode(raw.slice(0, literal));
    account = safeDecode(raw.slice(literal + 1));
    if (issuer === null) return null;
  } else {
    account = safeDecode(raw);
    const colon = account?.indexOf(":") ?? -1;
    if (account !== null && colon >= 0) {
      issuer = account.slice(0, colon);
      account = account.slice(colon + 1);
    }
  }
  // The format allows optional spaces after the colon.
  account = account?.replace(/^ +/, "") ?? null;
  return account ? { issuer, account } : null;
}

function safeDecode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function parseWholeNumber(text: string): number | null {
  if (!/^[0-9]{1,16}$/.test(text)) return null;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : null;
}

import { verifyHotp, verifyTotp, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import type { TokenRow } from "../../storage/schema.js";
import { nodeHotp } from "./hotp-node.js";

/** What a passcode check concluded for one token; the caller stores the new state with a compare-and-set. */
export type PasscodeVerdict =
  | { ok: true; mode: "totp"; step: number; driftSteps: number }
  | { ok: true; mode: "hotp"; nextCounter: number }
  | { ok: false; reason: "malformed" | "wrong" | "replayed" };

/**
 * Largest drift kept, each way: an hour of 30-second steps. Logins move the drift one
 * step at a time; `resyncToken` may set it anywhere within this, and a login must keep
 * what it set.
 */
export const MAX_DRIFT_STEPS = 120;

/**
 * Checks a passcode against one token's key and state: TOTP (RFC 6238) with one step
 * each way around the learned drift, never a step at or before the last accepted one;
 * HOTP (RFC 4226) with a look-ahead of ten.
 */
export function verifyPasscode(token: Pick<TokenRow, "otp_mode" | "digits" | "algorithm" | "period_seconds" | "last_totp_step" | "drift_steps" | "hotp_counter">, key: Uint8Array, passcode: string, atMs: number): PasscodeVerdict {
  const params = { digits: Number(token.digits) as OtpDigits, algorithm: token.algorithm as OtpAlgorithm, generate: nodeHotp };
  if (token.otp_mode === "hotp") {
    const verdict = verifyHotp(key, passcode, { ...params, counter: Number(token.hotp_counter), lookAhead: 10 });
    return verdict.ok ? { ok: true, mode: "hotp", nextCounter: verdict.nextCounter } : verdict;
  }
  const verdict = verifyTotp(key, passcode, {
    ...params,
    atMs,
    periodSeconds: Number(token.period_seconds),
    window: 1,
    lastAcceptedStep: token.last_totp_step === null ? null : Number(token.last_totp_step),
    driftSteps: Number(token.drift_steps),
  });
  if (!verdict.ok) return verdict;
  return { ok: true, mode: "totp", step: verdict.step, driftSteps: Math.max(-MAX_DRIFT_STEPS, Math.min(MAX_DRIFT_STEPS, verdict.driftSteps)) };
}

/**
 * A typed passcode as it is checked: whitespace is no part of one. Apps show a passcode
 * in groups ("123 456"), and one copied may bring a space, a no-break space or a line
 * end along; without this each such login would be a wrong passcode, counted towards
 * the token's lock. The digits are the same, so a passcode once accepted is a replay
 * however it is spaced.
 */
export function typedPasscode(passcode: string): string {
  return /\s/u.test(passcode) ? passcode.replace(/\s/gu, "") : passcode;
}

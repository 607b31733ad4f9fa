// HOTP (RFC 4226) and TOTP (RFC 6238) generation and verification. The HMAC and the
// dynamic truncation come from the `otpauth` library (pure, runs in Node and browsers);
// this module adds what a server needs on top: windows, learned drift, replay refusal
// and resynchronisation, each failure returned as a value.
import { HOTP, Secret } from "otpauth";

export type OtpAlgorithm = "SHA1" | "SHA256" | "SHA512";
export type OtpDigits = 6 | 8;

export interface HotpOptions {
  /** The moving factor C of RFC 4226: a non-negative safe integer. */
  counter: number;
  digits: OtpDigits;
  algorithm: OtpAlgorithm;
}

/** RFC 4226 section 5.3: HMAC over the 8-byte counter, dynamic truncation, zero-padded. */
export function hotp(key: Uint8Array, { counter, digits, algorithm }: HotpOptions): string {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`HOTP counter must be a non-negative safe integer, got ${counter}`);
  }
  // A copy into a fresh Uint8Array: Secret keeps the ArrayBuffer, which for a subarray
  // (and for Node's pooled Buffers, whose slice() does not copy) holds more than the key.
  const secret = new Secret({ buffer: new Uint8Array(key).buffer });
  return HOTP.generate({ secret, algorithm, digits, counter });
}

/**
 * How a verifier computes one HOTP value; `hotp` unless given. A server may pass one on
 * its platform's HMAC (node:crypto), which costs a third of `otpauth`'s per value; it must
 * give the same digits for the same inputs.
 */
export type HotpGenerator = (key: Uint8Array, options: HotpOptions) => string;

/** RFC 6238 section 4.2: T = floor((now - T0) / X), with T0 = 0. */
export function totpStep(atMs: number, periodSeconds: number): number {
  if (!Number.isSafeInteger(periodSeconds) || periodSeconds <= 0) {
    throw new RangeError(`TOTP period must be a positive whole number of seconds, got ${periodSeconds}`);
  }
  if (!Number.isFinite(atMs) || atMs < 0) {
    throw new RangeError(`TOTP time must be a non-negative number of milliseconds, got ${atMs}`);
  }
  // One division, not two: atMs / 1000 / period could round across a step boundary.
  return Math.floor(atMs / (periodSeconds * 1000));
}

export interface TotpOptions {
  atMs: number;
  periodSeconds: number;
  digits: OtpDigits;
  algorithm: OtpAlgorithm;
  /** Steps added to the step of `atMs`, e.g. -1 for the previous code. @default 0 */
  stepOffset?: number;
}

export function totp(key: Uint8Array, { atMs, periodSeconds, digits, algorithm, stepOffset = 0 }: TotpOptions): string {
  return hotp(key, { counter: totpStep(atMs, periodSeconds) + stepOffset, digits, algorithm });
}

export interface VerifyTotpOptions {
  atMs: number;
  periodSeconds: number;
  digits: OtpDigits;
  algorithm: OtpAlgorithm;
  /** Steps accepted on each side of the expected step. @default 1 */
  window?: number;
  /** The step of the last accepted passcode, or null if none was accepted yet. */
  lastAcceptedStep: number | null;
  /** The token's learned clock drift in steps, from the last accepted passcode. @default 0 */
  driftSteps?: number;
  /** @default hotp */
  generate?: HotpGenerator;
}

export type VerifyTotpResult =
  | { ok: true; step: number; driftSteps: number }
  | { ok: false; reason: "malformed" | "wrong" | "replayed" };

/**
 * Checks a TOTP passcode against the steps around the current step shifted by the
 * learned drift. On success it returns the matched step (store it as the new
 * `lastAcceptedStep`, with a compare-and-set) and the new drift (matched step minus
 * current step).
 */
export function verifyTotp(key: Uint8Array, passcode: string, options: VerifyTotpOptions): VerifyTotpResult {
  const { atMs, periodSeconds, digits, algorithm, lastAcceptedStep } = options;
  const window = options.window ?? 1;
  const driftSteps = options.driftSteps ?? 0;
  const generate = options.generate ?? hotp;
  assertWholeNumber("window", window, 0);
  assertWholeNumber("driftSteps", driftSteps);
  if (!isWellFormed(passcode, digits)) return { ok: false, reason: "malformed" };

  const currentStep = totpStep(atMs, periodSeconds);
  const expectedStep = currentStep + driftSteps;
  // RFC 6238 section 5.2: accept a few steps of clock drift and network delay. The
  // expected step is tried first, then outwards, so the smallest correction wins.
  let replayed = false;
  for (const step of outwardFrom(expectedStep, window)) {
    if (step < 0) continue;
    if (!constantTimeEqual(generate(key, { counter: step, digits, algorithm }), passcode)) continue;
    // RFC 6238 section 5.2: the verifier must not accept the second attempt of the same OTP.
    if (lastAcceptedStep !== null && step <= lastAcceptedStep) {
      replayed = true;
      continue;
    }
    return { ok: true, step, driftSteps: step - currentStep };
  }
  return { ok: false, reason: replayed ? "replayed" : "wrong" };
}

export interface VerifyHotpOptions {
  /** The next expected counter: one past the counter of the last accepted passcode. */
  counter: number;
  digits: OtpDigits;
  algorithm: OtpAlgorithm;
  /** Counters tried beyond the expected one, for presses that never reached us. @default 10 */
  lookAhead?: number;
  /** @default hotp */
  generate?: HotpGenerator;
}

export type VerifyHotpResult = { ok: true; nextCounter: number } | { ok: false; reason: "malformed" | "wrong" };

/**
 * Checks an HOTP passcode against counters `counter` .. `counter + lookAhead`
 * (RFC 4226 section 7.4, the look-ahead window). Counters below `counter` are never
 * tried, so an accepted passcode cannot be replayed once `nextCounter` is stored.
 */
export function verifyHotp(key: Uint8Array, passcode: string, options: VerifyHotpOptions): VerifyHotpResult {
  const { counter, digits, algorithm } = options;
  const lookAhead = options.lookAhead ?? 10;
  const generate = options.generate ?? hotp;
  assertWholeNumber("lookAhead", lookAhead, 0);
  if (!isWellFormed(passcode, digits)) return { ok: false, reason: "malformed" };
  for (let candidate = counter; candidate <= counter + lookAhead; candidate++) {
    if (constantTimeEqual(generate(key, { counter: candidate, digits, algorithm }), passcode)) {
      return { ok: true, nextCounter: candidate + 1 };
    }
  }
  return { ok: false, reason: "wrong" };
}

export interface ResyncHotpOptions {
  /** The next expected counter. */
  counter: number;
  digits: OtpDigits;
  algorithm: OtpAlgorithm;
  /** Counters searched from `counter` for the first of the two passcodes. @default 1000 */
  searchWindow?: number;
}

/**
 * RFC 4226 section 7.4 resynchronisation: finds two consecutive passcodes within
 * `counter` .. `counter + searchWindow - 1` (for the first one). A single passcode
 * could be a lucky guess over a window this wide; two in a row cannot.
 */
export function resyncHotp(
  key: Uint8Array,
  first: string,
  second: string,
  options: ResyncHotpOptions,
): VerifyHotpResult {
  const { counter, digits, algorithm } = options;
  const searchWindow = options.searchWindow ?? 1000;
  assertWholeNumber("searchWindow", searchWindow, 1);
  if (!isWellFormed(first, digits) || !isWellFormed(second, digits)) return { ok: false, reason: "malformed" };
  for (let candidate = counter; candidate < counter + searchWindow; candidate++) {
    if (!constantTimeEqual(hotp(key, { counter: candidate, digits, algorithm }), first)) continue;
    if (constantTimeEqual(hotp(key, { counter: candidate + 1, digits, algorithm }), second)) {
      return { ok: true, nextCounter: candidate + 2 };
    }
  }
  return { ok: false, reason: "wrong" };
}

function isWellFormed(passcode: string, digits: OtpDigits): boolean {
  return passcode.length === digits && /^[0-9]+$/.test(passcode);
}

/** expected, expected-1, expected+1, expected-2, ... up to `window` steps each way. */
function* outwardFrom(expected: number, window: number): Generator<number> {
  yield expected;
  for (let distance = 1; distance <= window; distance++) {
    yield expected - distance;
    yield expected + distance;
  }
}

/**
 * Compares two strings of equal length in time independent of where they differ, so
 * the response time does not tell a guesser how many leading digits were right.
 */
function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

function assertWholeNumber(name: string, value: number, minimum = Number.MIN_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new RangeError(`${name} must be a whole number >= ${minimum}, got ${value}`);
  }
}

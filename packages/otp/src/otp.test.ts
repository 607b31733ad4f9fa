import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { hotp, resyncHotp, totp, totpStep, verifyHotp, verifyTotp } from "./otp.js";
import type { OtpAlgorithm, OtpDigits } from "./otp.js";

const ascii = (text: string) => new TextEncoder().encode(text);

// RFC 4226 Appendix D: secret "12345678901234567890", counters 0..9, 6 digits, SHA-1.
const rfc4226Key = ascii("12345678901234567890");
const rfc4226Codes = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];

// RFC 6238 Appendix B: 8 digits, 30-second steps; each algorithm has its own seed.
const rfc6238Seeds: Record<OtpAlgorithm, Uint8Array> = {
  SHA1: ascii("12345678901234567890"),
  SHA256: ascii("12345678901234567890123456789012"),
  SHA512: ascii("1234567890123456789012345678901234567890123456789012345678901234"),
};
const rfc6238Vectors: Array<[number, OtpAlgorithm, string]> = [
  [59, "SHA1", "94287082"],
  [59, "SHA256", "46119246"],
  [59, "SHA512", "90693936"],
  [1111111109, "SHA1", "07081804"],
  [1111111109, "SHA256", "68084774"],
  [1111111109, "SHA512", "25091201"],
  [1111111111, "SHA1", "14050471"],
  [1111111111, "SHA256", "67062674"],
  [1111111111, "SHA512", "99943326"],
  [1234567890, "SHA1", "89005924"],
  [1234567890, "SHA256", "91819424"],
  [1234567890, "SHA512", "93441116"],
  [2000000000, "SHA1", "69279037"],
  [2000000000, "SHA256", "90698825"],
  [2000000000, "SHA512", "38618901"],
  [20000000000, "SHA1", "65353130"],
  [20000000000, "SHA256", "77737706"],
  [20000000000, "SHA512", "47863826"],
];

/** RFC 4226 section 5.3 written out with node:crypto, to check the library independently. */
function referenceHotp(key: Uint8Array, counter: number, digits: OtpDigits, algorithm: OtpAlgorithm): string {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac(algorithm.toLowerCase(), key).update(message).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** digits).padStart(digits, "0");
}

describe("hotp", () => {
  it.each(rfc4226Codes.map((code, counter) => [counter, code] as const))(
    "gives the RFC 4226 Appendix D code for counter %i",
    (counter, code) => {
      expect(hotp(rfc4226Key, { counter, digits: 6, algorithm: "SHA1" })).toBe(code);
    },
  );

  it("agrees with an independent node:crypto computation for every algorithm and length", () => {
    const key = ascii("another key, of another length");
    for (const algorithm of ["SHA1", "SHA256", "SHA512"] as const) {
      for (const digits of [6, 8] as const) {
        for (const counter of [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
          expect(hotp(key, { counter, digits, algorithm })).toBe(referenceHotp(key, counter, digits, algorithm));
        }
      }
    }
  });

  it("uses only the bytes of a subarray key, not its whole buffer", () => {
    const padded = new Uint8Array(40);
    padded.set(rfc4226Key, 10);
    expect(hotp(padded.subarray(10, 30), { counter: 0, digits: 6, algorithm: "SHA1" })).toBe("755224");
  });

  it.each([-1, 1.5, Number.NaN, 2 ** 53])("throws on the impossible counter %d", (counter) => {
    expect(() => hotp(rfc4226Key, { counter, digits: 6, algorithm: "SHA1" })).toThrow(RangeError);
  });
});

describe("totp", () => {
  it.each(rfc6238Vectors)("gives the RFC 6238 Appendix B code at %i s with %s", (seconds, algorithm, code) => {
    const options = { atMs: seconds * 1000, periodSeconds: 30, digits: 8, algorithm } as const;
    expect(totp(rfc6238Seeds[algorithm], options)).toBe(code);
  });

  it("counts steps from the Unix epoch, changing exactly at each period boundary", () => {
    expect(totpStep(0, 30)).toBe(0);
    expect(totpStep(29_999, 30)).toBe(0);
    expect(totpStep(30_000, 30)).toBe(1);
    expect(totpStep(1_111_111_109_000, 30)).toBe(0x23523ec);
    expect(totpStep(20_000_000_000_000, 30)).toBe(0x27bc86aa);
    expect(totpStep(59_999, 60)).toBe(0);
  });

  it("gives the code of a neighbouring step with stepOffset", () => {
    const base = { periodSeconds: 30, digits: 6, algorithm: "SHA1" } as const;
    expect(totp(rfc4226Key, { ...base, atMs: 60_000, stepOffset: -1 })).toBe(totp(rfc4226Key, { ...base, atMs: 30_000 }));
    expect(totp(rfc4226Key, { ...base, atMs: 60_000, stepOffset: 1 })).toBe(totp(rfc4226Key, { ...base, atMs: 90_000 }));
  });

  it.each([0, -30, 1.5])("throws on the impossible period %d", (periodSeconds) => {
    expect(() => totpStep(0, periodSeconds)).toThrow(RangeError);
  });
});

describe("verifyTotp", () => {
  const key = rfc4226Key;
  const atMs = 1_700_000_000_000;
  const step = totpStep(atMs, 30);
  const params = { periodSeconds: 30, digits: 6, algorithm: "SHA1" } as const;
  const codeAt = (offset: number) => totp(key, { ...params, atMs, stepOffset: offset });
  const verify = (passcode: string, extra: { window?: number; lastAcceptedStep?: number | null; driftSteps?: number } = {}) =>
    verifyTotp(key, passcode, { ...params, atMs, lastAcceptedStep: null, ...extra });

  it("accepts the current code with no drift", () => {
    expect(verify(codeAt(0))).toEqual({ ok: true, step, driftSteps: 0 });
  });

  it("accepts one step early or late by default and learns the drift", () => {
    expect(verify(codeAt(-1))).toEqual({ ok: true, step: step - 1, driftSteps: -1 });
    expect(verify(codeAt(1))).toEqual({ ok: true, step: step + 1, driftSteps: 1 });
  });

  it("rejects a code two steps away unless the window is widened", () => {
    expect(verify(codeAt(2))).toEqual({ ok: false, reason: "wrong" });
    expect(verify(codeAt(-2))).toEqual({ ok: false, reason: "wrong" });
    expect(verify(codeAt(2), { window: 2 })).toEqual({ ok: true, step: step + 2, driftSteps: 2 });
  });

  it("accepts only the exact step with a window of zero", () => {
    expect(verify(codeAt(0), { window: 0 }).ok).toBe(true);
    expect(verify(codeAt(1), { window: 0 })).toEqual({ ok: false, reason: "wrong" });
  });

  it("centres the window on the learned drift", () => {
    expect(verify(codeAt(3), { driftSteps: 3 })).toEqual({ ok: true, step: step + 3, driftSteps: 3 });
    expect(verify(codeAt(4), { driftSteps: 3 })).toEqual({ ok: true, step: step + 4, driftSteps: 4 });
    expect(verify(codeAt(2), { driftSteps: 3 })).toEqual({ ok: true, step: step + 2, driftSteps: 2 });
    expect(verify(codeAt(0), { driftSteps: 3 })).toEqual({ ok: false, reason: "wrong" });
  });

  it("rejects a TOTP that was already accepted", () => {
    expect(verify(codeAt(0), { lastAcceptedStep: step })).toEqual({ ok: false, reason: "replayed" });
  });

  it("rejects a code of a step before the last accepted one as replayed", () => {
    expect(verify(codeAt(-1), { lastAcceptedStep: step })).toEqual({ ok: false, reason: "replayed" });
  });

  it("accepts the code of the step after the last accepted one", () => {
    expect(verify(codeAt(0), { lastAcceptedStep: step - 1 })).toEqual({ ok: true, step, driftSteps: 0 });
    expect(verify(codeAt(1), { lastAcceptedStep: step })).toEqual({ ok: true, step: step + 1, driftSteps: 1 });
  });

  it("calls a wrong code wrong, not replayed, even after an accepted one", () => {
    const wrong = codeAt(0) === "000000" ? "000001" : "000000";
    expect(verify(wrong, { lastAcceptedStep: step })).toEqual({ ok: false, reason: "wrong" });
  });

  it("skips steps before the epoch instead of throwing", () => {
    const code = totp(key, { ...params, atMs: 0 });
    expect(verifyTotp(key, code, { ...params, atMs: 0, lastAcceptedStep: null })).toEqual({ ok: true, step: 0, driftSteps: 0 });
  });

  it("accepts 8-digit codes with SHA-512 at the RFC 6238 vector", () => {
    const result = verifyTotp(rfc6238Seeds.SHA512, "47863826", {
      atMs: 20_000_000_000_000,
      periodSeconds: 30,
      digits: 8,
      algorithm: "SHA512",
      lastAcceptedStep: null,
    });
    expect(result).toEqual({ ok: true, step: 666666666, driftSteps: 0 });
  });

  it.each(["", "12345", "1234567", "12345a", " 12345", "12345 ", "-12345", "1e5000", "１２３４５６", "123\n45"])(
    "refuses the malformed passcode %j before computing anything",
    (passcode) => {
      // An impossible time would throw if any code were computed.
      const result = verifyTotp(key, passcode, { ...params, atMs: Number.NaN, lastAcceptedStep: null });
      expect(result).toEqual({ ok: false, reason: "malformed" });
    },
  );

  it("refuses a 6-digit passcode for an 8-digit token as malformed", () => {
    expect(verifyTotp(key, codeAt(0), { ...params, digits: 8, atMs, lastAcceptedStep: null })).toEqual({
      ok: false,
      reason: "malformed",
    });
  });
});

describe("verifyHotp", () => {
  const params = { digits: 6, algorithm: "SHA1" } as const;

  it("accepts the code of the expected counter and moves past it", () => {
    expect(verifyHotp(rfc4226Key, "969429", { ...params, counter: 3 })).toEqual({ ok: true, nextCounter: 4 });
  });

  it("accepts a code up to ten counters ahead by default", () => {
    const code = hotp(rfc4226Key, { ...params, counter: 15 });
    expect(verifyHotp(rfc4226Key, code, { ...params, counter: 5 })).toEqual({ ok: true, nextCounter: 16 });
  });

  it("rejects a code beyond the look-ahead", () => {
    const code = hotp(rfc4226Key, { ...params, counter: 16 });
    expect(verifyHotp(rfc4226Key, code, { ...params, counter: 5 })).toEqual({ ok: false, reason: "wrong" });
    expect(verifyHotp(rfc4226Key, code, { ...params, counter: 5, lookAhead: 11 })).toEqual({ ok: true, nextCounter: 17 });
  });

  it("rejects an HOTP that was already accepted", () => {
    expect(verifyHotp(rfc4226Key, "969429", { ...params, counter: 4 })).toEqual({ ok: false, reason: "wrong" });
  });

  it.each(["", "96942", "9694290", "96942x"])("refuses the malformed passcode %j", (passcode) => {
    expect(verifyHotp(rfc4226Key, passcode, { ...params, counter: 0 })).toEqual({ ok: false, reason: "malformed" });
  });
});

describe("resyncHotp", () => {
  const params = { digits: 6, algorithm: "SHA1" } as const;
  const codeAt = (counter: number) => hotp(rfc4226Key, { ...params, counter });

  it("finds two consecutive codes far beyond the look-ahead", () => {
    expect(resyncHotp(rfc4226Key, codeAt(600), codeAt(601), { ...params, counter: 100 })).toEqual({
      ok: true,
      nextCounter: 602,
    });
  });

  it("accepts the two codes right at the expected counter", () => {
    expect(resyncHotp(rfc4226Key, "755224", "287082", { ...params, counter: 0 })).toEqual({ ok: true, nextCounter: 2 });
  });

  it("rejects two codes that are not consecutive", () => {
    expect(resyncHotp(rfc4226Key, codeAt(600), codeAt(602), { ...params, counter: 100 })).toEqual({
      ok: false,
      reason: "wrong",
    });
    expect(resyncHotp(rfc4226Key, codeAt(601), codeAt(600), { ...params, counter: 100 })).toEqual({
      ok: false,
      reason: "wrong",
    });
  });

  it("rejects codes beyond the search window", () => {
    expect(resyncHotp(rfc4226Key, codeAt(1100), codeAt(1101), { ...params, counter: 100 })).toEqual({
      ok: false,
      reason: "wrong",
    });
    expect(resyncHotp(rfc4226Key, codeAt(1099), codeAt(1100), { ...params, counter: 100 })).toEqual({
      ok: true,
      nextCounter: 1101,
    });
  });

  it("never goes back to counters already used", () => {
    expect(resyncHotp(rfc4226Key, "755224", "287082", { ...params, counter: 1 })).toEqual({ ok: false, reason: "wrong" });
  });

  it("refuses a malformed first or second passcode", () => {
    expect(resyncHotp(rfc4226Key, "75522", "287082", { ...params, counter: 0 })).toEqual({ ok: false, reason: "malformed" });
    expect(resyncHotp(rfc4226Key, "755224", "2870821", { ...params, counter: 0 })).toEqual({ ok: false, reason: "malformed" });
  });
});

describe("keys that are views of a larger buffer", () => {
  it("gives the same passcode for a Node Buffer from the shared pool as for a plain copy", () => {
    // Buffer.from of a short string comes from Node's pool: byteOffset > 0 in a larger ArrayBuffer.
    const pooled = Buffer.from("12345678901234567890");
    const plain = new Uint8Array(pooled);
    expect(hotp(pooled, { counter: 0, digits: 6, algorithm: "SHA1" })).toBe("755224");
    expect(hotp(plain, { counter: 0, digits: 6, algorithm: "SHA1" })).toBe("755224");
  });
});


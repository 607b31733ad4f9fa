import { hotp, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { nodeHotp } from "./hotp-node.js";

describe("HOTP on node:crypto", () => {
  it("gives RFC 4226 appendix D's values", () => {
    const key = Buffer.from("12345678901234567890");
    const expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
    expect(expected.map((_, counter) => nodeHotp(key, { counter, digits: 6, algorithm: "SHA1" }))).toEqual(expected);
  });

  it("gives the same digits as the library's hotp for every algorithm, length, and counters past 2^32", () => {
    for (let i = 0; i < 300; i++) {
      const algorithm = (["SHA1", "SHA256", "SHA512"] as const)[i % 3] as OtpAlgorithm;
      const digits = (i % 2 ? 6 : 8) as OtpDigits;
      const key = randomBytes([20, 32, 64][i % 3]!);
      const counter = [i, 2 ** 32 - 1 + i, Number.MAX_SAFE_INTEGER - i, Math.floor(Math.random() * 2 ** 40)][i % 4]!;
      expect(nodeHotp(key, { counter, digits, algorithm }), `${algorithm} ${digits} ${counter}`).toBe(hotp(key, { counter, digits, algorithm }));
    }
    expect(() => nodeHotp(Buffer.alloc(20), { counter: -1, digits: 6, algorithm: "SHA1" })).toThrow(RangeError);
  });
});

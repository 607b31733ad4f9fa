import { describe, expect, it } from "vitest";
import { hasValidLuhnCheckDigit, luhnCheckDigit } from "./check-digit.js";

describe("Luhn check digit", () => {
  it("matches the ISO/IEC 7812 worked example", () => {
    expect(luhnCheckDigit("7992739871")).toBe(3);
    expect(hasValidLuhnCheckDigit("79927398713")).toBe(true);
  });

  it("catches every single-digit change", () => {
    const good = "12345678" + String(luhnCheckDigit("12345678"));
    for (let position = 0; position < good.length; position++) {
      for (let digit = 0; digit <= 9; digit++) {
        if (String(digit) === good[position]) continue;
        const typo = good.slice(0, position) + String(digit) + good.slice(position + 1);
        expect(hasValidLuhnCheckDigit(typo)).toBe(false);
      }
    }
  });

  it("refuses text that is not all digits", () => {
    expect(hasValidLuhnCheckDigit("12a4")).toBe(false);
    expect(hasValidLuhnCheckDigit("")).toBe(false);
  });
});

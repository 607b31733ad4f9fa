import { describe, expect, it } from "vitest";
import { decodeBase32, encodeBase32 } from "./base32.js";

// RFC 4648 section 10 test vectors (without padding).
const vectors: Array<[string, string]> = [
  ["", ""],
  ["f", "MY"],
  ["fo", "MZXQ"],
  ["foo", "MZXW6"],
  ["foob", "MZXW6YQ"],
  ["fooba", "MZXW6YTB"],
  ["foobar", "MZXW6YTBOI"],
];

describe("base32", () => {
  it.each(vectors)("encodes %j as %s", (plain, encoded) => {
    expect(encodeBase32(new TextEncoder().encode(plain))).toBe(encoded);
  });

  it.each(vectors)("decodes %j from %s with padding and lower case", (plain, encoded) => {
    const padded = encoded.toLowerCase() + "=".repeat((8 - (encoded.length % 8)) % 8);
    expect(new TextDecoder().decode(decodeBase32(padded)!)).toBe(plain);
  });

  it("rejects characters outside the alphabet", () => {
    expect(decodeBase32("MZXW1")).toBeNull();
  });
});

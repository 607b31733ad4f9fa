import { describe, expect, it } from "vitest";
import { decodeBase64url, encodeBase64url } from "./base64url.js";

// RFC 4648 section 10 test vectors, without padding (base64 and base64url agree on them).
const vectors: Array<[string, string]> = [
  ["", ""],
  ["f", "Zg"],
  ["fo", "Zm8"],
  ["foo", "Zm9v"],
  ["foob", "Zm9vYg"],
  ["fooba", "Zm9vYmE"],
  ["foobar", "Zm9vYmFy"],
];

describe("base64url", () => {
  it.each(vectors)("encodes %j as %s", (plain, encoded) => {
    expect(encodeBase64url(new TextEncoder().encode(plain))).toBe(encoded);
  });

  it.each(vectors)("decodes %j from %s", (plain, encoded) => {
    expect(new TextDecoder().decode(decodeBase64url(encoded)!)).toBe(plain);
  });

  it("uses - and _ where base64 uses + and /", () => {
    expect(encodeBase64url(new Uint8Array([0xfb, 0xff, 0xbf]))).toBe("-_-_");
    expect(decodeBase64url("-_-_")).toEqual(new Uint8Array([0xfb, 0xff, 0xbf]));
  });

  it("round-trips every byte value at every length remainder", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (const length of [254, 255, 256]) {
      const bytes = all.subarray(0, length);
      expect(decodeBase64url(encodeBase64url(bytes))).toEqual(Uint8Array.from(bytes));
    }
  });

  it.each([
    ["padding", "Zg=="],
    ["the base64 alphabet", "+/+/"],
    ["whitespace", "Zm9v Yg"],
    ["an impossible length", "Zm9vY"],
    ["non-zero spare bits", "Zh"],
  ])("rejects %s", (_what, text) => {
    expect(decodeBase64url(text)).toBeNull();
  });
});

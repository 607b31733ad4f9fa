import { describe, expect, it } from "vitest";
import { buildOtpauthUri, parseOtpauthUri } from "./otpauth-uri.js";
import type { OtpauthUri, OtpauthUriInput } from "./otpauth-uri.js";

const secret = new TextEncoder().encode("12345678901234567890");

describe("buildOtpauthUri", () => {
  it("writes a TOTP URI with the issuer in the label and as a parameter", () => {
    const uri = buildOtpauthUri({
      type: "totp",
      issuer: "Tessera",
      account: "alice@example.com",
      secret,
      algorithm: "SHA1",
      digits: 6,
      periodSeconds: 30,
    });
    expect(uri).toBe(
      "otpauth://totp/Tessera:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Tessera&algorithm=SHA1&digits=6&period=30",
    );
  });

  it("writes an HOTP URI with its counter", () => {
    const uri = buildOtpauthUri({
      type: "hotp",
      issuer: "Tessera",
      account: "bob",
      secret,
      algorithm: "SHA256",
      digits: 8,
      counter: 42,
    });
    expect(uri).toBe(
      "otpauth://hotp/Tessera:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Tessera&algorithm=SHA256&digits=8&counter=42",
    );
  });

  it("encodes spaces as %20, never +, and fills in the default period", () => {
    const uri = buildOtpauthUri({
      type: "totp",
      issuer: "Acme Co & Sons",
      account: "Alice Smith",
      secret,
      algorithm: "SHA1",
      digits: 6,
    });
    expect(uri).toBe(
      "otpauth://totp/Acme%20Co%20%26%20Sons:Alice%20Smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Co%20%26%20Sons&algorithm=SHA1&digits=6&period=30",
    );
  });

  it("leaves out the issuer when there is none", () => {
    const uri = buildOtpauthUri({ type: "hotp", issuer: "", account: "carol", secret, algorithm: "SHA1", digits: 6 });
    expect(uri).toBe("otpauth://hotp/carol?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA1&digits=6&counter=0");
  });

  it("throws on an impossible period or counter", () => {
    const base = { issuer: "T", account: "a", secret, algorithm: "SHA1", digits: 6 } as const;
    expect(() => buildOtpauthUri({ ...base, type: "totp", periodSeconds: 0 })).toThrow(RangeError);
    expect(() => buildOtpauthUri({ ...base, type: "hotp", counter: -1 })).toThrow(RangeError);
  });
});

describe("parseOtpauthUri", () => {
  const roundTrips: OtpauthUri[] = [
    { type: "totp", issuer: "Tessera", account: "alice@example.com", secret, algorithm: "SHA1", digits: 6, periodSeconds: 30 },
    { type: "totp", issuer: "Acme: Europe", account: "Ärger Üser+1", secret: new Uint8Array(64).fill(0xa5), algorithm: "SHA512", digits: 8, periodSeconds: 60 },
    { type: "hotp", issuer: "Tessera", account: "bob", secret: new Uint8Array([1, 2, 3, 4, 5, 6, 7]), algorithm: "SHA256", digits: 8, counter: 9007199254740991 },
    { type: "hotp", issuer: "", account: "no issuer", secret, algorithm: "SHA1", digits: 6, counter: 0 },
  ];

  it.each(roundTrips)("round-trips a $type URI for $account", (value) => {
    expect(parseOtpauthUri(buildOtpauthUri(value))).toEqual({ ok: true, value });
  });

  it("fills in the format's defaults", () => {
    const parsed = parseOtpauthUri("otpauth://totp/alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    expect(parsed).toEqual({
      ok: true,
      value: { type: "totp", issuer: "", account: "alice", secret, algorithm: "SHA1", digits: 6, periodSeconds: 30 },
    });
  });

  it("accepts what other issuers write: encoded colon, spaces, padding, lower case, + for space", () => {
    const parsed = parseOtpauthUri(
      "OTPAUTH://TOTP/Big%20Corp%3A%20%20alice%40example.com?secret=gezdgnbvgy3tqojqgezdgnbvgy3tqojq%3D%3D&algorithm=sha256&issuer=Big+Corp",
    );
    expect(parsed).toEqual({
      ok: true,
      value: {
        type: "totp",
        // "+" means a space in the query (form encoding); the label uses %20.
        issuer: "Big Corp",
        account: "alice@example.com",
        secret,
        algorithm: "SHA256",
        digits: 6,
        periodSeconds: 30,
      },
    });
  });

  it("takes the issuer from the label when the parameter is missing", () => {
    const parsed = parseOtpauthUri("otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP");
    expect(parsed.ok && parsed.value.issuer).toBe("Example");
    expect(parsed.ok && parsed.value.account).toBe("alice@google.com");
  });

  it.each([
    ["https://example.com/totp/a?secret=JBSWY3DP", "not-otpauth"],
    ["otpauth://totp?secret=JBSWY3DP", "not-otpauth"],
    ["otpauth://motp/a?secret=JBSWY3DP", "unknown-type"],
    ["otpauth://totp/?secret=JBSWY3DP", "bad-label"],
    ["otpauth://totp/Issuer:?secret=JBSWY3DP", "bad-label"],
    ["otpauth://totp/a%E0%A4%A?secret=JBSWY3DP", "bad-label"],
    ["otpauth://totp/One:a?secret=JBSWY3DP&issuer=Two", "issuer-mismatch"],
    ["otpauth://totp/a", "missing-secret"],
    ["otpauth://totp/a?secret=", "missing-secret"],
    ["otpauth://totp/a?secret=JBSWY3D1", "bad-secret"],
    ["otpauth://totp/a?secret=JBSWY3DP&algorithm=MD5", "bad-algorithm"],
    ["otpauth://totp/a?secret=JBSWY3DP&digits=7", "bad-digits"],
    ["otpauth://totp/a?secret=JBSWY3DP&period=0", "bad-period"],
    ["otpauth://totp/a?secret=JBSWY3DP&period=30s", "bad-period"],
    ["otpauth://hotp/a?secret=JBSWY3DP", "bad-counter"],
    ["otpauth://hotp/a?secret=JBSWY3DP&counter=-1", "bad-counter"],
    ["otpauth://hotp/a?secret=JBSWY3DP&counter=9007199254740992", "bad-counter"],
  ] as const)("refuses %s as %s", (uri, problem) => {
    expect(parseOtpauthUri(uri)).toEqual({ ok: false, problem });
  });

  it("accepts the output type of parse as input to build", () => {
    const parsed = parseOtpauthUri("otpauth://hotp/T:a?secret=JBSWY3DP&counter=5");
    if (!parsed.ok) throw new Error(parsed.problem);
    const input: OtpauthUriInput = parsed.value;
    expect(buildOtpauthUri(input)).toBe("otpauth://hotp/T:a?secret=JBSWY3DP&issuer=T&algorithm=SHA1&digits=6&counter=5");
  });
});

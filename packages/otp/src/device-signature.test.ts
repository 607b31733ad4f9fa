import { createHash, createPublicKey, verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import { canonicalRequest, sha256Base64url, signRequest, verifySignature } from "./device-signature.js";
import type { SignedRequestFields } from "./device-signature.js";
import { exportPublicKey, generateEnrollmentKeys, importSigningPublicKey } from "./enrollment.js";

const fields: SignedRequestFields = {
  method: "post",
  path: "/api/v1/push/answers?wait=30",
  bodySha256Base64url: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
  timestampMs: 1_700_000_000_123,
  deviceId: "dev_01H8",
};

async function deviceKeys() {
  const { signing } = await generateEnrollmentKeys();
  const imported = await importSigningPublicKey(await exportPublicKey(signing.publicKey));
  if (!imported.ok) throw new Error("import failed");
  return { privateKey: signing.privateKey, publicKey: imported.key };
}

describe("canonicalRequest", () => {
  it("joins the version, upper-cased method, path, body hash, time and device id by newlines", () => {
    expect(canonicalRequest(fields)).toBe(
      "tessera-request-v1\nPOST\n/api/v1/push/answers?wait=30\n47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\n1700000000123\ndev_01H8",
    );
  });

  it.each(["method", "path", "bodySha256Base64url", "deviceId"] as const)("throws on a line break in %s", (field) => {
    expect(() => canonicalRequest({ ...fields, [field]: "a\nb" })).toThrow(RangeError);
    expect(() => canonicalRequest({ ...fields, [field]: "a\rb" })).toThrow(RangeError);
  });

  it.each([-1, 1.5, Number.NaN])("throws on the impossible time %d", (timestampMs) => {
    expect(() => canonicalRequest({ ...fields, timestampMs })).toThrow(RangeError);
  });
});

describe("sha256Base64url", () => {
  it("hashes the empty body to the well-known SHA-256 of nothing", async () => {
    expect(await sha256Base64url("")).toBe("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
    expect(await sha256Base64url(new Uint8Array())).toBe("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
  });

  it("hashes strings as UTF-8 and agrees with node:crypto", async () => {
    const body = '{"answer":"approve","note":"grüße"}';
    expect(await sha256Base64url(body)).toBe(createHash("sha256").update(body, "utf8").digest("base64url"));
  });

  it("hashes only the bytes of a subarray", async () => {
    const bytes = new TextEncoder().encode("xxabcxx").subarray(2, 5);
    expect(await sha256Base64url(bytes)).toBe(await sha256Base64url("abc"));
  });
});

describe("signRequest and verifySignature", () => {
  it("accepts the signature of the same canonical request", async () => {
    const { privateKey, publicKey } = await deviceKeys();
    const canonical = canonicalRequest(fields);
    expect(await verifySignature(publicKey, canonical, await signRequest(privateKey, canonical))).toBe(true);
  });

  it("signs in IEEE P1363 r||s form that node:crypto verifies", async () => {
    const { privateKey, publicKey } = await deviceKeys();
    const canonical = canonicalRequest(fields);
    const signature = Buffer.from(await signRequest(privateKey, canonical), "base64url");
    expect(signature.length).toBe(64);
    const point = Buffer.from(await exportPublicKey(publicKey), "base64url");
    const nodeKey = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url") },
      format: "jwk",
    });
    expect(verify("sha256", Buffer.from(canonical), { key: nodeKey, dsaEncoding: "ieee-p1363" }, signature)).toBe(true);
  });

  it.each([
    ["method", { method: "PUT" }],
    ["path", { path: "/api/v1/push/answers?wait=31" }],
    ["body hash", { bodySha256Base64url: "LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564" }],
    ["time", { timestampMs: 1_700_000_000_124 }],
    ["device id", { deviceId: "dev_01H9" }],
  ])("rejects the signature when the %s changed", async (_what, change) => {
    const { privateKey, publicKey } = await deviceKeys();
    const signature = await signRequest(privateKey, canonicalRequest(fields));
    expect(await verifySignature(publicKey, canonicalRequest({ ...fields, ...change }), signature)).toBe(false);
  });

  it("rejects a signature by another device's key", async () => {
    const [device, other] = await Promise.all([deviceKeys(), deviceKeys()]);
    const canonical = canonicalRequest(fields);
    expect(await verifySignature(device.publicKey, canonical, await signRequest(other.privateKey, canonical))).toBe(false);
  });

  it("rejects a signature with one bit flipped", async () => {
    const { privateKey, publicKey } = await deviceKeys();
    const canonical = canonicalRequest(fields);
    const signature = Buffer.from(await signRequest(privateKey, canonical), "base64url");
    signature[10] = signature[10]! ^ 1;
    expect(await verifySignature(publicKey, canonical, signature.toString("base64url"))).toBe(false);
  });

  it.each([
    ["empty", ""],
    ["not base64url", "not a signature!"],
    ["padded", `${Buffer.alloc(64, 1).toString("base64")}==`],
    ["too short", Buffer.alloc(63, 1).toString("base64url")],
    ["DER-encoded", Buffer.alloc(70, 0x30).toString("base64url")],
    ["all zeros", Buffer.alloc(64).toString("base64url")],
  ])("returns false, without throwing, for a signature that is %s", async (_what, signature) => {
    const { publicKey } = await deviceKeys();
    expect(await verifySignature(publicKey, canonicalRequest(fields), signature)).toBe(false);
  });

  it("returns false, without throwing, when given a key that cannot verify", async () => {
    const { agreement, signing } = await generateEnrollmentKeys();
    const canonical = canonicalRequest(fields);
    const signature = await signRequest(signing.privateKey, canonical);
    expect(await verifySignature(agreement.publicKey, canonical, signature)).toBe(false);
  });
});

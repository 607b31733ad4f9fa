import { createECDH, createHash, hkdfSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeBase32 } from "./base32.js";
import { decodeBase64url } from "./base64url.js";
import {
  deriveTokenKey,
  exportPublicKey,
  generateEnrollmentKeys,
  importAgreementPublicKey,
  importSigningPublicKey,
  randomCode,
} from "./enrollment.js";
import type { OtpAlgorithm } from "./otp.js";
import type { WebCryptoKey } from "./webcrypto.js";

// Two P-256 key pairs generated once with WebCrypto and pinned, so the derived key below
// is a test vector the server, the web app and the CLI must all reproduce.
const serverJwk = {
  d: "nezJcyUjLW9nE4kcXXShfG2tUrObGkr7nCgUzdRNMAA",
  x: "jQ8UzO92B3sQs-uJLzvmE5pMx0TTu7gEFbrJwhWapeU",
  y: "gty93vykMRCZi055f1optbKdrXfpsj9hmyEa93j9HWk",
};
const appJwk = {
  d: "xC8rlnZ8XIrNSt4vtRwr5lzes0l2WQVt9YoxtAj3ko0",
  x: "CyJwT2PMNhyeUqOqPkio3_hhHXX4o24TbCqXwk-TYqg",
  y: "iSAJI1irIik_gwzUlqPKx9zabebXPlTgATnmNyXNv_A",
};
const serial = "MP0000000017";
const enrollmentCode = "KZXW6YTBOI5WQZLMMFXGKY3PNVZA";
const expectedSha1KeyHex = "2200ec504fd6c068def21d5f3eceee22348e9cd3";

const ECDH = { name: "ECDH", namedCurve: "P-256" } as const;

async function privateKeyOf(jwk: typeof serverJwk): Promise<WebCryptoKey> {
  return crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", ...jwk }, ECDH, false, ["deriveBits"]);
}

async function publicKeyOf(jwk: typeof serverJwk): Promise<WebCryptoKey> {
  return crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, ECDH, true, []);
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** The same derivation written with node:crypto's own ECDH and HKDF, independently. */
function referenceTokenKey(own: typeof serverJwk, peer: typeof serverJwk, algorithm: OtpAlgorithm): string {
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(Buffer.from(own.d, "base64url"));
  const peerPoint = Buffer.concat([Buffer.from([4]), Buffer.from(peer.x, "base64url"), Buffer.from(peer.y, "base64url")]);
  const shared = ecdh.computeSecret(peerPoint);
  const salt = createHash("sha256").update(enrollmentCode, "utf8").digest();
  const info = Buffer.from(`tessera-otp-key-v1\0${serial}`, "utf8");
  const length = { SHA1: 20, SHA256: 32, SHA512: 64 }[algorithm];
  return Buffer.from(hkdfSync("sha256", shared, salt, info, length)).toString("hex");
}

async function serverSideKey(overrides: Partial<{ serial: string; enrollmentCode: string; algorithm: OtpAlgorithm }> = {}) {
  return deriveTokenKey({
    privateKey: await privateKeyOf(serverJwk),
    peerPublicKey: await publicKeyOf(appJwk),
    serial,
    enrollmentCode,
    algorithm: "SHA1",
    ...overrides,
  });
}

describe("deriveTokenKey", () => {
  it("derives the pinned SHA-1 key of the test vector", async () => {
    expect(hex(await serverSideKey())).toBe(expectedSha1KeyHex);
  });

  it.each(["SHA1", "SHA256", "SHA512"] as const)("agrees with node:crypto ECDH and HKDF for %s", async (algorithm) => {
    const key = await serverSideKey({ algorithm });
    expect(hex(key)).toBe(referenceTokenKey(serverJwk, appJwk, algorithm));
    expect(key.length).toBe({ SHA1: 20, SHA256: 32, SHA512: 64 }[algorithm]);
  });

  it("gives both sides the same key", async () => {
    const appSide = await deriveTokenKey({
      privateKey: await privateKeyOf(appJwk),
      peerPublicKey: await publicKeyOf(serverJwk),
      serial,
      enrollmentCode,
      algorithm: "SHA1",
    });
    expect(hex(appSide)).toBe(expectedSha1KeyHex);
  });

  it("gives both sides the same key with freshly generated, non-extractable keys", async () => {
    const [server, app] = await Promise.all([generateEnrollmentKeys(), generateEnrollmentKeys()]);
    // The keys cross the wire only in exported form.
    const appPublic = await importAgreementPublicKey(await exportPublicKey(app.agreement.publicKey));
    const serverPublic = await importAgreementPublicKey(await exportPublicKey(server.agreement.publicKey));
    if (!appPublic.ok || !serverPublic.ok) throw new Error("import failed");
    const options = { serial, enrollmentCode, algorithm: "SHA256" } as const;
    const serverKey = await deriveTokenKey({ ...options, privateKey: server.agreement.privateKey, peerPublicKey: appPublic.key });
    const appKey = await deriveTokenKey({ ...options, privateKey: app.agreement.privateKey, peerPublicKey: serverPublic.key });
    expect(hex(serverKey)).toBe(hex(appKey));
  });

  it("gives a different key for a different serial", async () => {
    expect(hex(await serverSideKey({ serial: "MP0000000025" }))).not.toBe(expectedSha1KeyHex);
  });

  it("gives a different key for a different enrollment code", async () => {
    expect(hex(await serverSideKey({ enrollmentCode: "KZXW6YTBOI5WQZLMMFXGKY3PNVZB" }))).not.toBe(expectedSha1KeyHex);
  });

  it("gives a different key with the wrong peer key", async () => {
    const stranger = await generateEnrollmentKeys();
    const key = await deriveTokenKey({
      privateKey: await privateKeyOf(serverJwk),
      peerPublicKey: stranger.agreement.publicKey,
      serial,
      enrollmentCode,
      algorithm: "SHA1",
    });
    expect(hex(key)).not.toBe(expectedSha1KeyHex);
  });
});

describe("generateEnrollmentKeys", () => {
  it("makes private keys non-extractable by default", async () => {
    const keys = await generateEnrollmentKeys();
    expect(keys.agreement.privateKey.extractable).toBe(false);
    expect(keys.signing.privateKey.extractable).toBe(false);
    await expect(crypto.subtle.exportKey("jwk", keys.agreement.privateKey)).rejects.toThrow();
  });

  it("makes them extractable on request", async () => {
    const keys = await generateEnrollmentKeys({ extractable: true });
    const jwk = await crypto.subtle.exportKey("jwk", keys.signing.privateKey);
    expect(jwk.crv).toBe("P-256");
  });

  it("makes an ECDH agreement pair and an ECDSA signing pair on P-256", async () => {
    const keys = await generateEnrollmentKeys();
    expect(keys.agreement.privateKey.algorithm).toMatchObject(ECDH);
    expect(keys.signing.privateKey.algorithm).toMatchObject({ name: "ECDSA", namedCurve: "P-256" });
  });
});

describe("public key export and import", () => {
  it("exports the uncompressed point of the pinned key in base64url", async () => {
    const exported = await exportPublicKey(await publicKeyOf(appJwk));
    const point = decodeBase64url(exported)!;
    expect(point.length).toBe(65);
    expect(point[0]).toBe(4);
    expect(hex(point.subarray(1, 33))).toBe(hex(decodeBase64url(appJwk.x)!));
    expect(hex(point.subarray(33))).toBe(hex(decodeBase64url(appJwk.y)!));
  });

  it("round-trips agreement and signing public keys", async () => {
    const keys = await generateEnrollmentKeys();
    const agreement = await exportPublicKey(keys.agreement.publicKey);
    const signing = await exportPublicKey(keys.signing.publicKey);
    const importedAgreement = await importAgreementPublicKey(agreement);
    const importedSigning = await importSigningPublicKey(signing);
    expect(importedAgreement.ok && (await exportPublicKey(importedAgreement.key))).toBe(agreement);
    expect(importedSigning.ok && (await exportPublicKey(importedSigning.key))).toBe(signing);
  });

  it("refuses a point that is not on the curve", async () => {
    const point = decodeBase64url(await exportPublicKey(await publicKeyOf(appJwk)))!;
    point[64] = point[64]! ^ 1;
    const tampered = Buffer.from(point).toString("base64url");
    expect(await importAgreementPublicKey(tampered)).toEqual({ ok: false, reason: "malformed" });
    expect(await importSigningPublicKey(tampered)).toEqual({ ok: false, reason: "malformed" });
  });

  it.each([
    ["not base64url", "not a key!"],
    ["empty", ""],
    ["too short", Buffer.alloc(64, 4).toString("base64url")],
    ["compressed", Buffer.concat([Buffer.from([2]), Buffer.from(appJwk.x, "base64url")]).toString("base64url")],
  ])("refuses a public key that is %s", async (_what, text) => {
    expect(await importAgreementPublicKey(text)).toEqual({ ok: false, reason: "malformed" });
    expect(await importSigningPublicKey(text)).toEqual({ ok: false, reason: "malformed" });
  });
});

describe("randomCode", () => {
  it("gives 128 bits as 26 base32 characters by default", () => {
    const code = randomCode();
    expect(code).toMatch(/^[A-Z2-7]{26}$/);
    expect(decodeBase32(code)!.length).toBe(16);
  });

  it("gives a different code each time", () => {
    const codes = new Set(Array.from({ length: 100 }, () => randomCode()));
    expect(codes.size).toBe(100);
  });

  it("takes other lengths", () => {
    expect(decodeBase32(randomCode(20))!.length).toBe(20);
  });

  it.each([0, -1, 1.5, 65537])("throws on the impossible length %d", (bytes) => {
    expect(() => randomCode(bytes)).toThrow(RangeError);
  });
});

import { canonicalRequest, exportPublicKey, sha256Base64url, signRequest } from "@tessera/otp";
import { describe, expect, it } from "vitest";
import { bodyDigest, createDeviceSignatureVerifier } from "./device-signatures.js";

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;

describe("device signatures checked on node:crypto", () => {
  it("accepts what the app signs with WebCrypto, and nothing else", async () => {
    const verifyDeviceSignature = createDeviceSignatureVerifier();
    const pair = await crypto.subtle.generateKey(ECDSA, true, ["sign", "verify"]);
    const other = await crypto.subtle.generateKey(ECDSA, true, ["sign", "verify"]);
    const publicKey = await exportPublicKey(pair.publicKey);
    const body = JSON.stringify({ decision: "approve", otp: "123456" });
    const canonical = canonicalRequest({ method: "POST", path: "/device/v1/challenges/chl_1/answer", bodySha256Base64url: bodyDigest(body), timestampMs: 1_767_225_600_000, deviceId: "dev_1" });
    const signature = await signRequest(pair.privateKey, canonical);

    expect(bodyDigest(body)).toBe(await sha256Base64url(body));
    expect(bodyDigest("")).toBe(await sha256Base64url(""));
    expect(verifyDeviceSignature(publicKey, canonical, signature)).toBe(true);
    // Twice: the second time from the parsed key kept for this device.
    expect(verifyDeviceSignature(publicKey, canonical, signature)).toBe(true);

    expect(verifyDeviceSignature(publicKey, canonical.replace("chl_1", "chl_2"), signature)).toBe(false);
    expect(verifyDeviceSignature(await exportPublicKey(other.publicKey), canonical, signature)).toBe(false);
    expect(verifyDeviceSignature(publicKey, canonical, await signRequest(other.privateKey, canonical))).toBe(false);
    expect(verifyDeviceSignature(publicKey, canonical, signature.slice(0, -2))).toBe(false);
    expect(verifyDeviceSignature(publicKey, canonical, `${signature.slice(0, -1)}!`)).toBe(false);
    expect(verifyDeviceSignature("not-a-key", canonical, signature)).toBe(false);
    // A point that is not on the curve.
    expect(verifyDeviceSignature(Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)]).toString("base64url"), canonical, signature)).toBe(false);
  });
});

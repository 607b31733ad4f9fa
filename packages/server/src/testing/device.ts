import {
  canonicalRequest,
  deriveTokenKey,
  exportPublicKey,
  generateEnrollmentKeys,
  importAgreementPublicKey,
  sha256Base64url,
  signRequest,
  totp,
  type OtpAlgorithm,
} from "@tessera/otp";
import type { createTestApp } from "../http/testing-app.js";

/** A tessera app as the server sees it: keys, key agreement, signed requests. */
export async function simulatedDevice(api: Awaited<ReturnType<typeof createTestApp>>, nowMs: () => number) {
  const keys = await generateEnrollmentKeys();
  let deviceId = "";
  let tokenKey: Uint8Array | null = null;
  let otp: { algorithm: OtpAlgorithm; digits: 6 | 8; periodSeconds: number } | null = null;
  const signed = async (method: string, path: string, body: unknown) => {
    const raw = body === undefined ? "" : JSON.stringify(body);
    const timestampMs = nowMs();
    const canonical = canonicalRequest({ method, path, bodySha256Base64url: await sha256Base64url(raw), timestampMs, deviceId });
    const signature = await signRequest(keys.signing.privateKey, canonical);
    const response = await api.app.inject({
      method: method as "POST",
      url: path,
      ...(raw ? { payload: raw } : {}),
      headers: { ...(raw ? { "content-type": "application/json" } : {}), "x-tessera-device-id": deviceId, "x-tessera-timestamp": String(timestampMs), "x-tessera-signature": signature },
    });
    return { status: response.statusCode, json: response.json() as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  return {
    keys,
    get deviceId() {
      return deviceId;
    },
    async enroll(code: string, pushPermitted: boolean, pushSubscription?: object) {
      const response = await api.call("POST", "/device/v1/enrollments", null, {
        code,
        agreementPublicKey: await exportPublicKey(keys.agreement.publicKey),
        signingPublicKey: await exportPublicKey(keys.signing.publicKey),
        platform: { os: "Android", osVersion: "14", deviceType: "phone", appVersion: "1.0.0" },
        pushPermitted,
        ...(pushSubscription ? { pushSubscription } : {}),
      });
      if (response.status !== 201) return response;
      deviceId = response.json.deviceId;
      otp = response.json.otp;
      const server = await importAgreementPublicKey(response.json.serverPublicKey);
      if (!server.ok) throw new Error("server key");
      tokenKey = await deriveTokenKey({ privateKey: keys.agreement.privateKey, peerPublicKey: server.key, serial: response.json.serial, enrollmentCode: code, algorithm: otp!.algorithm });
      return response;
    },
    passcode: () => totp(tokenKey!, { atMs: nowMs(), periodSeconds: otp!.periodSeconds, digits: otp!.digits, algorithm: otp!.algorithm }),
    confirm: (enrollmentId: string, passcode: string) => signed("POST", `/device/v1/enrollments/${enrollmentId}/confirm`, { otp: passcode }),
    settings: (autosendPasscode: boolean, pushSubscription?: object | null) =>
      signed("PUT", `/device/v1/devices/${deviceId}/settings`, { autosendPasscode, ...(pushSubscription === undefined ? {} : { pushSubscription }) }),
    poll: (waitSeconds = 0) => signed("GET", `/device/v1/devices/${deviceId}/challenges?wait=${waitSeconds}`, undefined),
    answer: (challengeId: string, decision: "approve" | "deny" | "fraud", serial?: string, passcode?: string) =>
      signed("POST", `/device/v1/challenges/${challengeId}/answer`, decision === "approve" ? { decision, serial, otp: passcode } : { decision }),
  };
}


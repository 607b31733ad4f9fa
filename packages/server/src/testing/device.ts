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
import type { SignedRequest } from "../modules/enrollment/engine.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { hashEnrollmentCode, newEnrollmentCode } from "../modules/provisioning/codes.js";
import type { TestCore } from "./databases.js";

/** A tessera app as the server sees it: keys, key agreement, signed requests. */
export async function simulatedDevice(api: Awaited<ReturnType<typeof createTestApp>>, nowMs: () => number) {
  const keys = await generateEnrollmentKeys();
  let deviceId = "";
  let tokenKey: Uint8Array | null = null;
  let otp: { algorithm: OtpAlgorithm; digits: 6 | 8; periodSeconds: number } | null = null;
  /** The signed request as the server's routes hand it to the services. */
  const sign = async (method: string, path: string, body: unknown): Promise<SignedRequest> => {
    const raw = body === undefined ? "" : JSON.stringify(body);
    const timestampMs = nowMs();
    const bodySha256Base64url = await sha256Base64url(raw);
    const signature = await signRequest(keys.signing.privateKey, canonicalRequest({ method, path, bodySha256Base64url, timestampMs, deviceId }));
    return { method, path, bodySha256Base64url, timestampMs, deviceId, signature };
  };
  const signed = async (method: string, path: string, body: unknown) => {
    const raw = body === undefined ? "" : JSON.stringify(body);
    const { timestampMs, signature } = await sign(method, path, body);
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
    sign,
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


/**
 * A new user with a tessera token enrolled by a simulated device, as provisioning and the
 * app would do it (the enrollment code is replaced by one the test knows); the clock is
 * then one step on, so the device's next passcode is newer than the one enrollment used.
 */
export async function enrollSimulatedUser(
  core: TestCore,
  api: Awaited<ReturnType<typeof createTestApp>>,
  virtualServerId: string,
  userId: string,
  options: { pushPermitted: boolean; pushSubscription?: object },
) {
  await core.services.users.create(installerPrincipal, virtualServerId, { userId, firstName: userId, lastName: "", email: `${userId}@example.test`, groups: [] });
  await core.services.provisioning.createTask(installerPrincipal, { virtualServerId, users: { userIds: [userId] }, tokenType: "mobile", apps: ["tessera"] });
  const code = newEnrollmentCode();
  const user = await core.storage.db.selectFrom("users").select("id").where("virtual_server_id", "=", virtualServerId).where("user_id", "=", userId).executeTakeFirstOrThrow();
  await core.storage.db.updateTable("enrollments").set({ code_hash: hashEnrollmentCode(code) }).where("user_pk", "=", user.id).execute();
  const device = await simulatedDevice(api, () => core.clock.nowMs());
  const enrolled = await device.enroll(code, options.pushPermitted, options.pushSubscription);
  if (enrolled.status !== 201) throw new Error(`enrollment answered ${enrolled.status}: ${JSON.stringify(enrolled.json)}`);
  await device.confirm(enrolled.json.enrollmentId, device.passcode());
  core.clock.advance(30_000);
  return { device, serial: enrolled.json.serial as string };
}

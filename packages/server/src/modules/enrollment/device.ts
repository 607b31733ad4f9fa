import { deriveTokenKey, exportPublicKey, generateEnrollmentKeys, importAgreementPublicKey, importSigningPublicKey } from "@tessera/otp";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import { effectivePolicy } from "../policy/service.js";
import type { PushOtpState } from "../tokens/token.js";
import { enrollActor, type Claim, type DevicePlatform, type EnrollmentEngine, type SignedRequest } from "./engine.js";
import { targetOf } from "./platform.js";

/** The tessera app's side of enrollment (DESIGN section 3.4) and its signed settings call. */
export function createDeviceEnrollment(engine: EnrollmentEngine, deps: CoreDeps) {
  const { db, clock, audit } = deps;
  const { openOrFail, openById, claim, complete, countWrongPasscode, verifySigned, pushApplications } = engine;
  return {
    async enrollDevice(input: {
      code: string;
      agreementPublicKey: string;
      signingPublicKey: string;
      deviceId?: string;
      platform: DevicePlatform;
      pushPermitted: boolean;
      pushSubscription?: unknown;
      liveCapable?: boolean;
    }) {
      const found = await openOrFail(input.code);
      if (!found.apps.includes("tessera") || found.token.type !== "mobile") throw fail("APP_NOT_ALLOWED", { app: "tessera" });
      const agreement = await importAgreementPublicKey(input.agreementPublicKey);
      if (!agreement.ok) throw fail("DEVICE_KEY_INVALID", { which: "agreement" });
      if (!(await importSigningPublicKey(input.signingPublicKey)).ok) throw fail("DEVICE_KEY_INVALID", { which: "signing" });
      // A device that already holds tokens keeps its id, and must show the same key.
      let deviceId = input.deviceId;
      if (deviceId) {
        const known = await db.selectFrom("devices").select("signing_public_key").where("device_id", "=", deviceId).executeTakeFirst();
        if (known && known.signing_public_key !== input.signingPublicKey) throw fail("SIGNATURE_INVALID", { problem: "a different key for this device" });
        if (!known) deviceId = undefined;
      }
      deviceId ??= newId("dev");
      const policy = (await effectivePolicy(db, found.virtualServer.id)).effective;
      const server = await generateEnrollmentKeys();
      const tokenKey = await deriveTokenKey({
        privateKey: server.agreement.privateKey,
        peerPublicKey: agreement.key,
        serial: found.token.serial,
        enrollmentCode: input.code.trim().toUpperCase(),
        algorithm: policy.otpAlgorithm,
      });
      await db.transaction().execute((trx) =>
        claim(
          trx,
          found,
          {
            app: "tessera",
            deviceId,
            signingPublicKey: input.signingPublicKey,
            os: input.platform.os,
            osVersion: input.platform.osVersion ?? null,
            deviceType: input.platform.deviceType,
            appVersion: input.platform.appVersion,
            pushPermitted: input.pushPermitted,
            pushSubscription: input.pushSubscription,
            liveCapable: input.liveCapable ?? false,
            attempts: 0,
          },
          tokenKey,
          policy,
        ),
      );
      tokenKey.fill(0);
      return {
        enrollmentId: found.enrollment.id,
        deviceId,
        serial: found.token.serial,
        serverPublicKey: await exportPublicKey(server.agreement.publicKey),
        otp: { algorithm: policy.otpAlgorithm, digits: policy.otpDigits, periodSeconds: policy.otpPeriodSeconds },
        virtualServer: found.virtualServer,
        user: { userId: found.user.userId },
      };
    },

    /** Step 2: the device proves it holds the key with a first passcode, signed with its device key. */
    async confirmEnrollment(enrollmentId: string, otp: string, signed: SignedRequest) {
      const found = await openById(enrollmentId);
      const current = found?.enrollment.claim ? (JSON.parse(found.enrollment.claim) as Claim) : null;
      if (!found || found.enrollment.status !== "claimed" || !current || current.app !== "tessera") throw fail("ENROLLMENT_CODE_INVALID");
      if (current.deviceId !== signed.deviceId) throw fail("SIGNATURE_INVALID", { problem: "another device claimed this enrollment" });
      await verifySigned(signed, current.signingPublicKey!);
      const result = await db.transaction().execute((trx) =>
        complete(trx, found, otp, {
          app: "tessera",
          claim: current,
          platform: {
            target: targetOf({ os: current.os ?? "unknown", osVersion: current.osVersion ?? null }),
            deviceType: current.deviceType ?? null,
            appVersion: current.appVersion ?? null,
            os: current.os ?? null,
            osVersion: current.osVersion ?? null,
          },
        }),
      );
      if (!result.ok) return countWrongPasscode(found, current);
      return { ...result, deviceId: current.deviceId!, pushApplications: await pushApplications(found.virtualServer.id) };
    },

    /**
     * The device's signed settings: Autosend Passcode (its tokens' current Push OTP
     * state) and, when given, the Web Push subscription that wakes it (null: none). A
     * subscription alone (the app renewing it) never changes Autosend Passcode, and is
     * kept only while Autosend Passcode is on: a renewal that crosses the user turning
     * it off cannot turn it back on, nor leave a subscription behind.
     */
    async updateDeviceSettings(deviceId: string, settings: { autosendPasscode?: boolean; pushSubscription?: object | null }, signed: SignedRequest) {
      const rows = await db
        .selectFrom("devices")
        .innerJoin("tokens", "tokens.serial", "devices.token_serial")
        .select(["devices.token_serial", "devices.signing_public_key", "devices.push_now", "tokens.virtual_server_id", "tokens.user_pk"])
        .where("devices.device_id", "=", deviceId)
        .where("devices.app", "=", "tessera")
        .execute();
      if (rows.length === 0) throw fail("DEVICE_NOT_FOUND", { deviceId });
      if (signed.deviceId !== deviceId) throw fail("SIGNATURE_INVALID", { problem: "signed for another device" });
      await verifySigned(signed, rows[0]!.signing_public_key!);
      const now = clock.nowMs();
      const subscription = settings.pushSubscription === undefined ? {} : { push_subscription: settings.pushSubscription === null ? null : JSON.stringify(settings.pushSubscription) };
      if (settings.autosendPasscode === undefined) {
        await db
          .updateTable("devices")
          .set({ updated_at: now, last_seen_at: now, ...subscription })
          .where("device_id", "=", deviceId)
          .where("push_now", "=", "enabled")
          .execute();
        const current = await db.selectFrom("devices").select("push_now").where("device_id", "=", deviceId).executeTakeFirstOrThrow();
        return { deviceId, pushNow: current.push_now, tokens: rows.map((row) => row.token_serial) };
      }
      const pushNow: PushOtpState = settings.autosendPasscode ? "enabled" : "disabled";
      await db.transaction().execute(async (trx) => {
        await trx.updateTable("devices").set({ push_now: pushNow, updated_at: now, last_seen_at: now, ...subscription }).where("device_id", "=", deviceId).execute();
        await audit.append(
          trx,
          { ...enrollActor(deviceId), actor: `device:${deviceId}` },
          rows
            .filter((row) => row.push_now !== pushNow)
            .map((row) => ({
              action: "device.settings",
              virtualServerId: row.virtual_server_id,
              targetType: "token" as const,
              targetId: row.token_serial,
              tokenSerial: row.token_serial,
              userPk: row.user_pk,
              details: { pushNow, before: row.push_now },
            })),
        );
      });
      return { deviceId, pushNow, tokens: rows.map((row) => row.token_serial) };
    },

  };
}

import { randomBytes } from "node:crypto";
import {
  buildOtpauthUri,
  hotp,
  verifyHotp,
  canonicalRequest,
  deriveTokenKey,
  encodeBase32,
  exportPublicKey,
  generateEnrollmentKeys,
  importAgreementPublicKey,
  importSigningPublicKey,
  verifySignature,
  verifyTotp,
  type OtpAlgorithm,
  type OtpDigits,
} from "@tessera/otp";
import type { Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import type { Database, EnrollmentRow, TokenRow } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { queueMail } from "../mail/outbox.js";
import { escapeHtml } from "../mail/templates.js";
import { effectivePolicy } from "../policy/service.js";
import { hashEnrollmentCode, isWellFormedCode } from "../provisioning/codes.js";
import type { App } from "../provisioning/task.js";
import type { PushOtpState } from "../tokens/token.js";
import { targetOf, type Platform } from "./platform.js";

/** How long a device's claim on an enrollment holds before another device may take it. */
export const CLAIM_TTL_MS = 10 * 60 * 1000;
/** How far a signed request's timestamp may be from the server's clock. */
export const SIGNATURE_SKEW_MS = 5 * 60 * 1000;
const MAX_CONFIRM_ATTEMPTS = 5;
const HARDWARE_LOCKOUT_MS = 15 * 60 * 1000;

interface Claim {
  app: App | "email" | "hardware";
  /** Hardware tokens: wrong passcodes lock the page for a while instead of dropping a claim. */
  lockedUntil?: number;
  deviceId?: string;
  signingPublicKey?: string;
  os?: string | null;
  osVersion?: string | null;
  deviceType?: string | null;
  appVersion?: string | null;
  pushPermitted?: boolean;
  pushSubscription?: unknown;
  liveCapable?: boolean;
  attempts: number;
}

export interface OpenEnrollment {
  enrollment: EnrollmentRow;
  token: TokenRow;
  user: { userId: string; firstName: string; lastName: string; email: string };
  virtualServer: { id: string; name: string };
  apps: App[];
}

export interface DevicePlatform {
  os: string;
  osVersion?: string | null;
  deviceType: string;
  appVersion: string;
}

export interface SignedRequest {
  method: string;
  path: string;
  bodySha256Base64url: string;
  timestampMs: number;
  deviceId: string;
  signature: string;
}

const enrollActor = (userId: string): Principal => ({
  kind: "system",
  operatorId: null,
  actor: `user:${userId}`,
  role: "admin",
  scope: { virtualServerId: null, path: "/", includesChildren: true },
});

export function createEnrollmentService(deps: CoreDeps & { onMailQueued?: () => void }) {
  const { db, clock, audit, keyring } = deps;

  async function open(trx: Transaction<Database> | typeof db, code: string): Promise<OpenEnrollment | null> {
    if (!isWellFormedCode(code)) return null;
    const row = await trx
      .selectFrom("enrollments")
      .innerJoin("tokens", "tokens.serial", "enrollments.token_serial")
      .innerJoin("users", "users.id", "enrollments.user_pk")
      .innerJoin("virtual_servers", "virtual_servers.id", "enrollments.virtual_server_id")
      .selectAll("enrollments")
      .select(["users.user_id", "users.first_name", "users.last_name", "users.email", "virtual_servers.name as vs_name"])
      .where("enrollments.code_hash", "=", hashEnrollmentCode(code))
      .executeTakeFirst();
    if (!row || !["pending", "claimed"].includes(row.status) || row.expires_at <= clock.nowMs()) return null;
    const token = await trx.selectFrom("tokens").selectAll().where("serial", "=", row.token_serial).executeTakeFirst();
    if (!token || token.state !== "assigned" || token.user_pk !== row.user_pk) return null;
    const { user_id, first_name, last_name, email, vs_name, ...enrollment } = row;
    return {
      enrollment,
      token,
      user: { userId: user_id, firstName: first_name, lastName: last_name, email },
      virtualServer: { id: enrollment.virtual_server_id, name: vs_name },
      apps: JSON.parse(enrollment.apps) as App[],
    };
  }

  /** Takes the enrollment for one device: exactly one of two racing devices wins. */
  async function claim(
    trx: Transaction<Database>,
    found: OpenEnrollment,
    next: Claim,
    keyBytes: Uint8Array,
    policy: { otpAlgorithm: string; otpDigits: number; otpPeriodSeconds: number },
    otpMode: "totp" | "hotp" = "totp",
  ) {
    const now = clock.nowMs();
    const current = found.enrollment.claim ? (JSON.parse(found.enrollment.claim) as Claim) : null;
    // A page reload in the otp-app flow makes a new key over its own claim; a claim by
    // a tessera device holds for the claim TTL.
    const reclaimable =
      found.enrollment.status === "pending" ||
      (found.enrollment.claimed_at ?? 0) <= now - CLAIM_TTL_MS ||
      (current?.app === "otp-app" && next.app === "otp-app") ||
      (current?.app === "email" && next.app === "email");
    if (!reclaimable) throw fail("ENROLLMENT_IN_PROGRESS");
    const claimed = await trx
      .updateTable("enrollments")
      .set({ status: "claimed", claimed_at: now, claim: JSON.stringify(next), updated_at: now })
      .where("id", "=", found.enrollment.id)
      .where("status", "=", found.enrollment.status)
      .where((eb) => (found.enrollment.claimed_at === null ? eb("claimed_at", "is", null) : eb("claimed_at", "=", found.enrollment.claimed_at)))
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) !== 1) throw fail("ENROLLMENT_IN_PROGRESS");
    const sealed = keyring.encrypt(keyBytes, found.token.serial);
    await trx
      .updateTable("tokens")
      .set({
        key_ciphertext: sealed.ciphertext,
        key_id: sealed.keyId,
        algorithm: policy.otpAlgorithm,
        digits: policy.otpDigits,
        period_seconds: policy.otpPeriodSeconds,
        otp_mode: otpMode,
        hotp_counter: 0,
        updated_at: now,
      })
      .where("serial", "=", found.token.serial)
      .where("state", "=", "assigned")
      .execute();
  }

  /** Checks the first passcode and, when it matches, makes the token active with its device. */
  async function complete(trx: Transaction<Database>, found: OpenEnrollment, otp: string, device: { app: App; claim: Claim; platform: { target: string; deviceType: string | null; appVersion: string | null; os: string | null; osVersion: string | null } }) {
    const token = await trx.selectFrom("tokens").selectAll().where("serial", "=", found.token.serial).executeTakeFirstOrThrow();
    const now = clock.nowMs();
    const key = keyring.decrypt(token.key_ciphertext!, token.key_id!, token.serial);
    const verdict = verifyTotp(key, otp.trim(), {
      atMs: now,
      periodSeconds: Number(token.period_seconds),
      digits: Number(token.digits) as OtpDigits,
      algorithm: token.algorithm as OtpAlgorithm,
      window: 1,
      lastAcceptedStep: null,
    });
    key.fill(0);
    if (!verdict.ok) return { ok: false as const };
    const enrolled = await trx
      .updateTable("enrollments")
      .set({ status: "enrolled", enrolled_at: now, claim: null, updated_at: now })
      .where("id", "=", found.enrollment.id)
      .where("status", "=", "claimed")
      .executeTakeFirst();
    const activated = await trx
      .updateTable("tokens")
      .set({ state: "active", last_totp_step: verdict.step, drift_steps: verdict.driftSteps, failures: 0, state_changed_at: now, updated_at: now })
      .where("serial", "=", token.serial)
      .where("state", "=", "assigned")
      .executeTakeFirst();
    if (Number(enrolled.numUpdatedRows) !== 1 || Number(activated.numUpdatedRows) !== 1) throw fail("ENROLLMENT_CODE_INVALID");
    const push: PushOtpState = device.app === "otp-app" ? "not_applicable" : device.claim.pushPermitted ? "enabled" : "disabled";
    await trx.deleteFrom("devices").where("token_serial", "=", token.serial).execute();
    await trx
      .insertInto("devices")
      .values({
        token_serial: token.serial,
        app: device.app,
        target: device.platform.target,
        device_type: device.platform.deviceType,
        app_version: device.platform.appVersion,
        push_at_enrollment: push,
        push_now: push,
        enrolled_at: now,
        updated_at: now,
        device_id: device.claim.deviceId ?? null,
        signing_public_key: device.claim.signingPublicKey ?? null,
        os: device.platform.os,
        os_version: device.platform.osVersion,
        push_subscription: device.claim.pushSubscription ? JSON.stringify(device.claim.pushSubscription) : null,
        live_capable: device.claim.liveCapable ? 1 : 0,
        last_seen_at: now,
      })
      .execute();
    await audit.append(trx, enrollActor(found.user.userId), [
      {
        action: "token.enroll",
        virtualServerId: found.virtualServer.id,
        targetType: "token",
        targetId: token.serial,
        tokenSerial: token.serial,
        userPk: token.user_pk,
        fromState: "assigned",
        toState: "active",
        details: { app: device.app, target: device.platform.target, deviceType: device.platform.deviceType, pushAtEnrollment: push, deviceId: device.claim.deviceId ?? null },
      },
    ]);
    return { ok: true as const, serial: token.serial, app: device.app, pushAtEnrollment: push };
  }

  /** A wrong first passcode counts against the claim; five of them and the claim is dropped. */
  async function countWrongPasscode(found: OpenEnrollment, current: Claim): Promise<never> {
    const attempts = current.attempts + 1;
    const now = clock.nowMs();
    await db.transaction().execute(async (trx) => {
      if (current.app === "hardware") {
        // The seed stays (it is the device's); too many wrong codes close the page for a while.
        const next: Claim = attempts >= MAX_CONFIRM_ATTEMPTS ? { app: "hardware", attempts: 0, lockedUntil: now + HARDWARE_LOCKOUT_MS } : { ...current, attempts };
        await trx.updateTable("enrollments").set({ claim: JSON.stringify(next), updated_at: now }).where("id", "=", found.enrollment.id).execute();
        return;
      }
      if (attempts >= MAX_CONFIRM_ATTEMPTS) {
        await trx.updateTable("enrollments").set({ status: "pending", claim: null, claimed_at: null, updated_at: now }).where("id", "=", found.enrollment.id).where("status", "=", "claimed").execute();
        await trx.updateTable("tokens").set({ key_ciphertext: null, key_id: null, updated_at: now }).where("serial", "=", found.token.serial).where("state", "=", "assigned").execute();
      } else {
        await trx.updateTable("enrollments").set({ claim: JSON.stringify({ ...current, attempts }), updated_at: now }).where("id", "=", found.enrollment.id).where("status", "=", "claimed").execute();
      }
    });
    throw fail("ENROLLMENT_OTP_WRONG");
  }

  async function verifySigned(signed: SignedRequest, signingPublicKey: string): Promise<void> {
    if (Math.abs(clock.nowMs() - signed.timestampMs) > SIGNATURE_SKEW_MS) throw fail("SIGNATURE_INVALID", { problem: "timestamp too far from the server's clock" });
    const key = await importSigningPublicKey(signingPublicKey);
    if (!key.ok) throw fail("SIGNATURE_INVALID", { problem: "unusable device key" });
    const canonical = canonicalRequest({ method: signed.method, path: signed.path, bodySha256Base64url: signed.bodySha256Base64url, timestampMs: signed.timestampMs, deviceId: signed.deviceId });
    if (!(await verifySignature(key.key, canonical, signed.signature))) throw fail("SIGNATURE_INVALID", { problem: "bad signature" });
  }

  async function openOrFail(code: string): Promise<OpenEnrollment> {
    const found = await open(db, code);
    if (!found) throw fail("ENROLLMENT_CODE_INVALID");
    return found;
  }

  return {
    lookup: (code: string) => open(db, code),

    /** Step 1 of the tessera app's key agreement (DESIGN section 3.4). */
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
      const row = await db.selectFrom("enrollments").select("code_hash").where("id", "=", enrollmentId).executeTakeFirst();
      const found = row ? await openByHash(row.code_hash) : null;
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

    /** The self-enrollment page's otp-app flow, step 1: a new key and its otpauth URI, shown once. */
    async startOtpApp(code: string, platform: Platform) {
      const found = await openOrFail(code);
      if (!found.apps.includes("otp-app") || found.token.type !== "mobile") throw fail("APP_NOT_ALLOWED", { app: "otp-app" });
      const policy = (await effectivePolicy(db, found.virtualServer.id)).effective;
      const key = randomBytes({ SHA1: 20, SHA256: 32, SHA512: 64 }[policy.otpAlgorithm]);
      await db.transaction().execute((trx) =>
        claim(trx, found, { app: "otp-app", os: platform.os, osVersion: platform.osVersion, deviceType: platform.deviceType, attempts: 0 }, key, policy),
      );
      const uri = buildOtpauthUri({
        type: "totp",
        issuer: found.virtualServer.name,
        account: found.user.email || found.user.userId,
        secret: key,
        algorithm: policy.otpAlgorithm,
        digits: policy.otpDigits,
        periodSeconds: policy.otpPeriodSeconds,
      });
      const secretBase32 = encodeBase32(key);
      key.fill(0);
      return { serial: found.token.serial, otpauthUri: uri, secretBase32 };
    },

    /** The otp-app flow, step 2: the first passcode from the user's app activates the token. */
    async confirmOtpApp(code: string, otp: string) {
      const found = await openOrFail(code);
      const current = found.enrollment.claim ? (JSON.parse(found.enrollment.claim) as Claim) : null;
      if (found.enrollment.status !== "claimed" || current?.app !== "otp-app") throw fail("ENROLLMENT_CODE_INVALID");
      const result = await db.transaction().execute((trx) =>
        complete(trx, found, otp, {
          app: "otp-app",
          claim: current,
          platform: {
            target: targetOf({ os: current.os ?? "unknown", osVersion: current.osVersion ?? null }),
            deviceType: current.deviceType ?? null,
            appVersion: null,
            os: current.os ?? null,
            osVersion: current.osVersion ?? null,
          },
        }),
      );
      if (!result.ok) return countWrongPasscode(found, current);
      return { ...result, pushApplications: await pushApplications(found.virtualServer.id) };
    },

    /** Email tokens, step 1: a first code goes to the user's address; sending again makes a new key. */
    async sendEmailCode(code: string): Promise<{ serial: string; sentTo: string }> {
      const found = await openOrFail(code);
      if (found.token.type !== "email") throw fail("APP_NOT_ALLOWED", { app: "email" });
      if (!found.user.email) throw fail("USER_EMAIL_MISSING", { userIds: found.user.userId });
      const policy = (await effectivePolicy(db, found.virtualServer.id)).effective;
      const key = randomBytes({ SHA1: 20, SHA256: 32, SHA512: 64 }[policy.otpAlgorithm]);
      const passcode = hotp(key, { counter: 0, digits: policy.otpDigits, algorithm: policy.otpAlgorithm });
      await db.transaction().execute(async (trx) => {
        await claim(trx, found, { app: "email", attempts: 0 }, key, policy, "hotp");
        const text = `Your ${found.virtualServer.name} code is ${passcode}.\n\nEnter it on the enrollment page to confirm your email token ${found.token.serial}.\nIf you did not ask for it, ignore this mail.\n`;
        const html = `<p>Your ${escapeHtml(found.virtualServer.name)} code is <b style="font-size:1.4em;letter-spacing:.2em">${passcode}</b>.</p><p>Enter it on the enrollment page to confirm your email token ${escapeHtml(found.token.serial)}.</p><p style="color:#666">If you did not ask for it, ignore this mail.</p>`;
        await queueMail(trx, { keyring, clock }, { virtualServerId: found.virtualServer.id, kind: "otp", to: found.user.email, subject: `Your ${found.virtualServer.name} code`, text, html });
      });
      key.fill(0);
      deps.onMailQueued?.();
      const [name, domain] = found.user.email.split("@");
      return { serial: found.token.serial, sentTo: `${name!.slice(0, 1)}***@${domain}` };
    },

    /**
     * Email and hardware tokens, last step: the first code (from the mail, or from the
     * device in the user's hand) shows the user holds the token; it becomes active.
     */
    async confirmPossession(code: string, otp: string) {
      const found = await openOrFail(code);
      const current = found.enrollment.claim ? (JSON.parse(found.enrollment.claim) as Claim) : null;
      const now = clock.nowMs();
      if (found.token.type === "hardware") {
        if (current?.lockedUntil && current.lockedUntil > now) throw fail("RATE_LIMITED", { retryAfterSeconds: Math.ceil((current.lockedUntil - now) / 1000) }, { retryAfterSeconds: Math.ceil((current.lockedUntil - now) / 1000) });
      } else if (found.token.type !== "email" || found.enrollment.status !== "claimed" || current?.app !== "email") {
        throw fail("ENROLLMENT_CODE_INVALID");
      }
      const claimNow: Claim = current && !current.lockedUntil ? current : { app: found.token.type === "hardware" ? "hardware" : "email", attempts: 0 };
      const done = await db.transaction().execute(async (trx) => {
        const token = await trx.selectFrom("tokens").selectAll().where("serial", "=", found.token.serial).executeTakeFirstOrThrow();
        const key = keyring.decrypt(token.key_ciphertext!, token.key_id!, token.serial);
        const params = { digits: Number(token.digits) as OtpDigits, algorithm: token.algorithm as OtpAlgorithm };
        let changes: { last_totp_step?: number; drift_steps?: number; hotp_counter?: number } | null = null;
        if (token.otp_mode === "hotp") {
          // An email code is the counter's first value; a hardware HOTP device may have been pressed a few times.
          const verdict = verifyHotp(key, otp.trim(), { ...params, counter: Number(token.hotp_counter), lookAhead: token.type === "email" ? 0 : 10 });
          if (verdict.ok) changes = { hotp_counter: verdict.nextCounter };
        } else {
          // A hardware clock may have drifted further than a phone's: two steps each way.
          const verdict = verifyTotp(key, otp.trim(), { ...params, atMs: now, periodSeconds: Number(token.period_seconds), window: 2, lastAcceptedStep: null });
          if (verdict.ok) changes = { last_totp_step: verdict.step, drift_steps: verdict.driftSteps };
        }
        key.fill(0);
        if (!changes) return null;
        const enrolled = await trx
          .updateTable("enrollments")
          .set({ status: "enrolled", enrolled_at: now, claim: null, updated_at: now })
          .where("id", "=", found.enrollment.id)
          .where("status", "in", ["pending", "claimed"])
          .executeTakeFirst();
        const activated = await trx
          .updateTable("tokens")
          .set({ ...changes, state: "active", failures: 0, state_changed_at: now, updated_at: now })
          .where("serial", "=", token.serial)
          .where("state", "=", "assigned")
          .executeTakeFirst();
        if (Number(enrolled.numUpdatedRows) !== 1 || Number(activated.numUpdatedRows) !== 1) throw fail("ENROLLMENT_CODE_INVALID");
        await audit.append(trx, enrollActor(found.user.userId), [
          { action: "token.enroll", virtualServerId: found.virtualServer.id, targetType: "token", targetId: token.serial, tokenSerial: token.serial, userPk: token.user_pk, fromState: "assigned", toState: "active", details: { type: token.type } },
        ]);
        return { serial: token.serial, type: token.type };
      });
      if (!done) return countWrongPasscode(found, claimNow);
      return { ...done, pushApplications: await pushApplications(found.virtualServer.id) };
    },

    /** "Autosend Passcode" on or off, signed by the device: the current Push OTP state changes, the state at enrollment stays. */
    async updateDeviceSettings(deviceId: string, settings: { autosendPasscode: boolean }, signed: SignedRequest) {
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
      const pushNow: PushOtpState = settings.autosendPasscode ? "enabled" : "disabled";
      const now = clock.nowMs();
      await db.transaction().execute(async (trx) => {
        await trx.updateTable("devices").set({ push_now: pushNow, updated_at: now, last_seen_at: now }).where("device_id", "=", deviceId).execute();
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

    pushApplications,
  };

  async function openByHash(codeHash: string): Promise<OpenEnrollment | null> {
    const row = await db.selectFrom("enrollments").select("id").where("code_hash", "=", codeHash).executeTakeFirst();
    if (!row) return null;
    // The code itself is never stored; reuse `open` through the hash by a direct query.
    const enrollment = await db.selectFrom("enrollments").selectAll().where("id", "=", row.id).executeTakeFirstOrThrow();
    if (!["pending", "claimed"].includes(enrollment.status) || enrollment.expires_at <= clock.nowMs()) return null;
    const token = await db.selectFrom("tokens").selectAll().where("serial", "=", enrollment.token_serial).executeTakeFirst();
    const user = await db.selectFrom("users").selectAll().where("id", "=", enrollment.user_pk).executeTakeFirst();
    const vs = await db.selectFrom("virtual_servers").select(["id", "name"]).where("id", "=", enrollment.virtual_server_id).executeTakeFirstOrThrow();
    if (!token || !user || token.state !== "assigned" || token.user_pk !== enrollment.user_pk) return null;
    return {
      enrollment,
      token,
      user: { userId: user.user_id, firstName: user.first_name, lastName: user.last_name, email: user.email },
      virtualServer: vs,
      apps: JSON.parse(enrollment.apps) as App[],
    };
  }

  /** The resource names of the virtual server's applications that accept Push OTP. */
  async function pushApplications(virtualServerId: string): Promise<string[]> {
    const rows = await db.selectFrom("applications").select("resource_name").where("virtual_server_id", "=", virtualServerId).where("push_otp", "=", 1).orderBy("resource_name").execute();
    return rows.map((row) => row.resource_name);
  }
}

export type EnrollmentService = ReturnType<typeof createEnrollmentService>;

import { canonicalRequest, verifyTotp, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import { createDeviceSignatureVerifier } from "../../crypto/device-signatures.js";
import type { Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database, EnrollmentRow, TokenRow } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { typedPasscode } from "../auth/verify.js";
import { hashEnrollmentCode, isWellFormedCode } from "../provisioning/codes.js";
import type { App } from "../provisioning/task.js";
import type { PushOtpState } from "../tokens/token.js";

/** How long a device's claim on an enrollment holds before another device may take it. */
export const CLAIM_TTL_MS = 10 * 60 * 1000;
/** How far a signed request's timestamp may be from the server's clock. */
export const SIGNATURE_SKEW_MS = 5 * 60 * 1000;
export const MAX_CONFIRM_ATTEMPTS = 5;
export const HARDWARE_LOCKOUT_MS = 15 * 60 * 1000;

export interface Claim {
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

export const enrollActor = (userId: string): Principal => ({
  kind: "system",
  operatorId: null,
  actor: `user:${userId}`,
  role: "admin",
  scope: { virtualServerId: null, path: "/", includesChildren: true },
});

/**
 * What the enrollment flows share: finding an open enrollment by its code, a device's
 * claim on it, making the token active with its device record, counting wrong first
 * passcodes, checking signed device requests.
 */
export function createEnrollmentEngine(deps: CoreDeps & { onMailQueued?: () => void }) {
  const { db, clock, audit, keyring } = deps;
  const verifyDeviceSignature = createDeviceSignatureVerifier();

  /** An enrollment that can still be used, with its token, user and virtual server. */
  async function load(trx: Transaction<Database> | typeof db, by: { codeHash: string } | { id: string }): Promise<OpenEnrollment | null> {
    const enrollment = await ("id" in by
      ? trx.selectFrom("enrollments").selectAll().where("id", "=", by.id)
      : trx.selectFrom("enrollments").selectAll().where("code_hash", "=", by.codeHash)
    ).executeTakeFirst();
    if (!enrollment || !["pending", "claimed"].includes(enrollment.status) || enrollment.expires_at <= clock.nowMs()) return null;
    const row = await trx
      .selectFrom("tokens")
      .innerJoin("users", "users.id", "tokens.user_pk")
      .innerJoin("virtual_servers", "virtual_servers.id", "tokens.virtual_server_id")
      .selectAll("tokens")
      .select(["users.user_id", "users.first_name", "users.last_name", "users.email", "virtual_servers.name as vs_name"])
      .where("tokens.serial", "=", enrollment.token_serial)
      .executeTakeFirst();
    if (!row || row.state !== "assigned" || row.user_pk !== enrollment.user_pk) return null;
    const { user_id, first_name, last_name, email, vs_name, ...token } = row;
    return {
      enrollment,
      token,
      user: { userId: user_id, firstName: first_name, lastName: last_name, email },
      virtualServer: { id: enrollment.virtual_server_id, name: vs_name },
      apps: JSON.parse(enrollment.apps) as App[],
    };
  }

  const open = (trx: Transaction<Database> | typeof db, code: string) => (isWellFormedCode(code) ? load(trx, { codeHash: hashEnrollmentCode(code) }) : Promise.resolve(null));
  const openById = (id: string) => load(db, { id });

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
    const verdict = verifyTotp(key, typedPasscode(otp), {
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
    const canonical = canonicalRequest({ method: signed.method, path: signed.path, bodySha256Base64url: signed.bodySha256Base64url, timestampMs: signed.timestampMs, deviceId: signed.deviceId });
    if (!verifyDeviceSignature(signingPublicKey, canonical, signed.signature)) throw fail("SIGNATURE_INVALID", { problem: "bad signature" });
  }

  async function openOrFail(code: string): Promise<OpenEnrollment> {
    const found = await open(db, code);
    if (!found) throw fail("ENROLLMENT_CODE_INVALID");
    return found;
  }

  /** The resource names of the virtual server's applications that accept Push OTP. */
  async function pushApplications(virtualServerId: string): Promise<string[]> {
    const rows = await db.selectFrom("applications").select("resource_name").where("virtual_server_id", "=", virtualServerId).where("push_otp", "=", 1).orderBy("resource_name").execute();
    return rows.map((row) => row.resource_name);
  }

  return { open, openOrFail, openById, claim, complete, countWrongPasscode, verifySigned, pushApplications };
}

export type EnrollmentEngine = ReturnType<typeof createEnrollmentEngine>;

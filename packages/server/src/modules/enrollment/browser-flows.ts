import { randomBytes } from "node:crypto";
import { buildOtpauthUri, encodeBase32, hotp, verifyHotp, verifyTotp, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { queueMail } from "../mail/outbox.js";
import { escapeHtml } from "../mail/templates.js";
import { effectivePolicy } from "../policy/service.js";
import { typedPasscode } from "../auth/verify.js";
import { enrollActor, type Claim, type EnrollmentEngine } from "./engine.js";
import { targetOf, type Platform } from "./platform.js";

/** The flows of the self-enrollment page: any OTP app, hardware tokens, email tokens. */
export function createPageEnrollment(engine: EnrollmentEngine, deps: CoreDeps & { onMailQueued?: () => void }) {
  const { db, clock, audit, keyring } = deps;
  const { openOrFail, claim, complete, countWrongPasscode, pushApplications } = engine;
  return {
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
          const verdict = verifyHotp(key, typedPasscode(otp), { ...params, counter: Number(token.hotp_counter), lookAhead: token.type === "email" ? 0 : 10 });
          if (verdict.ok) changes = { hotp_counter: verdict.nextCounter };
        } else {
          // A hardware clock may have drifted further than a phone's: two steps each way.
          const verdict = verifyTotp(key, typedPasscode(otp), { ...params, atMs: now, periodSeconds: Number(token.period_seconds), window: 2, lastAcceptedStep: null });
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
  };
}

import { resyncHotp, totp, totpStep, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import { sql } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Principal } from "../operators/access.js";
import { findVisibleToken } from "../tokens/lifecycle-service.js";
import { requirePermission } from "../operators/access.js";
import { MAX_DRIFT_STEPS, typedPasscode } from "./verify.js";

/**
 * Resynchronises a token from two consecutive passcodes: HOTP finds the counter (RFC 4226
 * section 7.4), TOTP learns how many steps the device's clock is off. Neither passcode
 * can be used to log in afterwards.
 */
export function createResync(deps: Pick<CoreDeps, "db" | "clock" | "audit" | "keyring">) {
  const { db, clock, audit, keyring } = deps;
  return async function resyncToken(principal: Principal, serial: string, first: string, second: string) {
    return db.transaction().execute(async (trx) => {
      const token = await findVisibleToken(trx, principal, serial);
      requirePermission(principal, "tokens.support");
      if (!["active", "locked"].includes(token.state) || token.key_ciphertext === null) {
        throw fail("TOKEN_STATE_CONFLICT", { serial, state: token.state, action: "resync", allowed: "active or locked" });
      }
      const key = keyring.decrypt(token.key_ciphertext, token.key_id!, serial);
      const params = { digits: Number(token.digits) as OtpDigits, algorithm: token.algorithm as OtpAlgorithm };
      const now = clock.nowMs();
      let changes: { hotp_counter?: number; drift_steps?: number; last_totp_step?: number } | null = null;
      const [one, two] = [typedPasscode(first), typedPasscode(second)];
      if (token.otp_mode === "hotp") {
        const verdict = resyncHotp(key, one, two, { ...params, counter: Number(token.hotp_counter) });
        if (verdict.ok) changes = { hotp_counter: verdict.nextCounter };
      } else {
        const period = Number(token.period_seconds);
        const current = totpStep(now, period);
        // The second code's step is the device's "now": its drift, within what logins keep.
        for (let offset = -MAX_DRIFT_STEPS - 1; offset < MAX_DRIFT_STEPS && !changes; offset++) {
          const step = current + offset;
          const at = (step: number) => totp(key, { ...params, atMs: step * period * 1000, periodSeconds: period });
          if (at(step) === one && at(step + 1) === two) changes = { drift_steps: offset + 1, last_totp_step: step + 1 };
        }
      }
      key.fill(0);
      if (!changes) throw fail("RESYNC_FAILED", { serial });
      // The accepted step and the counter never move back: codes up to the last accepted
      // one were seen, and a resync with older codes must not open them again; nor may a
      // login accepted meanwhile (on another connection or node, after the read above)
      // be undone by writing a lower counter over the one it stored.
      const { last_totp_step: step, hotp_counter: counter, ...rest } = changes;
      const updated = await trx
        .updateTable("tokens")
        .set({
          ...rest,
          ...(step === undefined ? {} : { last_totp_step: sql<number>`case when last_totp_step is null or last_totp_step < ${step} then ${step} else last_totp_step end` }),
          ...(counter === undefined ? {} : { hotp_counter: sql<number>`case when hotp_counter < ${counter} then ${counter} else hotp_counter end` }),
          failures: 0,
          updated_at: now,
        })
        .where("serial", "=", serial)
        // Suspended or revoked on another connection since the read: no resync.
        .where("state", "in", ["active", "locked"])
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) !== 1) {
        const current = await trx.selectFrom("tokens").select("state").where("serial", "=", serial).executeTakeFirst();
        throw fail("TOKEN_STATE_CONFLICT", { serial, state: current?.state ?? "deleted", action: "resync", allowed: "active or locked" });
      }
      const stored = await trx.selectFrom("tokens").select(["hotp_counter", "drift_steps", "last_totp_step"]).where("serial", "=", serial).executeTakeFirstOrThrow();
      const result = token.otp_mode === "hotp" ? { hotp_counter: Number(stored.hotp_counter) } : { drift_steps: Number(stored.drift_steps), last_totp_step: Number(stored.last_totp_step) };
      await audit.append(trx, principal, [
        { action: "token.resync", virtualServerId: token.virtual_server_id, targetType: "token", targetId: serial, tokenSerial: serial, userPk: token.user_pk, details: result },
      ]);
      return { serial, ...result };
    });
  };
}

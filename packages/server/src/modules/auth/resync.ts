import { resyncHotp, totp, totpStep, type OtpAlgorithm, type OtpDigits } from "@tessera/otp";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Principal } from "../operators/access.js";
import { findVisibleToken } from "../tokens/lifecycle-service.js";
import { requirePermission } from "../operators/access.js";

/** How far a TOTP token's clock may be off for a resync to find it: an hour each way. */
const TOTP_RESYNC_STEPS = 120;

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
      if (token.otp_mode === "hotp") {
        const verdict = resyncHotp(key, first.trim(), second.trim(), { ...params, counter: Number(token.hotp_counter) });
        if (verdict.ok) changes = { hotp_counter: verdict.nextCounter };
      } else {
        const period = Number(token.period_seconds);
        const current = totpStep(now, period);
        for (let offset = -TOTP_RESYNC_STEPS; offset <= TOTP_RESYNC_STEPS && !changes; offset++) {
          const step = current + offset;
          const at = (step: number) => totp(key, { ...params, atMs: step * period * 1000, periodSeconds: period });
          if (at(step) === first.trim() && at(step + 1) === second.trim()) changes = { drift_steps: offset + 1, last_totp_step: step + 1 };
        }
      }
      key.fill(0);
      if (!changes) throw fail("RESYNC_FAILED", { serial });
      await trx.updateTable("tokens").set({ ...changes, failures: 0, updated_at: now }).where("serial", "=", serial).execute();
      await audit.append(trx, principal, [
        { action: "token.resync", virtualServerId: token.virtual_server_id, targetType: "token", targetId: serial, tokenSerial: serial, userPk: token.user_pk, details: changes },
      ]);
      return { serial, ...changes };
    });
  };
}

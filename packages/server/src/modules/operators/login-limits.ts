import { sql, type Kysely } from "kysely";
import type { Clock } from "../../clock.js";
import type { DatabaseKind } from "../../storage/database.js";
import type { Database } from "../../storage/schema.js";
import { endedWindowSweeper } from "../auth/limits.js";
import { fixedWindows } from "../auth/windows.js";

/**
 * Operator password logins: each attempt is taken from a budget per email and per
 * source address before the password is checked, and given back when it succeeds. An
 * attempt in progress therefore counts as a failure until it is known not to be one,
 * so guesses sent all at once stop at the limit like guesses sent one by one (a
 * password check takes tens of milliseconds: counting after it would let a burst
 * through whole).
 */
export interface LoginLimits {
  /** One attempt for the email and for the address; or, when either is spent, none and how long to wait. */
  take(email: string, address: string): Promise<{ ok: true } | { ok: false; retryAfterMs: number }>;
  /** The attempt got in: the email starts again from nothing, the address gets its attempt back. */
  succeeded(email: string, address: string): Promise<void>;
}

export interface LoginLimitSettings {
  emailAttempts: number;
  addressAttempts: number;
  windowSeconds: number;
}

/** One server on SQLite: the budgets live in its memory. */
export function memoryLoginLimits(clock: Clock, settings: LoginLimitSettings): LoginLimits {
  const byEmail = fixedWindows(clock, settings.windowSeconds * 1000);
  const byAddress = fixedWindows(clock, settings.windowSeconds * 1000);
  return {
    async take(email, address) {
      const spent = [
        byEmail.count(email) >= settings.emailAttempts ? byEmail.msLeft(email) : 0,
        byAddress.count(address) >= settings.addressAttempts ? byAddress.msLeft(address) : 0,
      ];
      if (spent.some((ms) => ms > 0)) return { ok: false, retryAfterMs: Math.max(...spent) };
      byEmail.add(email);
      byAddress.add(address);
      return { ok: true };
    },
    async succeeded(email, address) {
      byEmail.forget(email);
      byAddress.remove(address);
    },
  };
}

/**
 * Several nodes on one PostgreSQL: the budgets are rows of `auth_failures` (keys
 * `operator-email:` and `operator-address:`), so n nodes do not allow n times the
 * guesses. Taking an attempt is one upsert of both keys that returns the new counts;
 * it locks the email's row, then the address's, as every upsert here does. Giving an
 * attempt back is one statement a row, so it never holds one row while waiting for the
 * other, and cannot close a cycle with an upsert.
 */
export function databaseLoginLimits(db: Kysely<Database>, clock: Clock, settings: LoginLimitSettings): LoginLimits {
  const emailKey = (email: string) => `operator-email:${email}`;
  const addressKey = (address: string) => `operator-address:${address.replaceAll("\0", "\\0")}`;
  const giveBack = async (key: string) => {
    await db
      .updateTable("auth_failures")
      .set((eb) => ({ failures: eb("failures", "-", 1) }))
      .where("key", "=", key)
      .where("failures", ">", 0)
      .execute();
  };
  const sweep = endedWindowSweeper(db, clock);
  return {
    async take(email, address) {
      const now = clock.nowMs();
      const keys = { email: emailKey(email), address: addressKey(address) };
      const windowEnds = now + settings.windowSeconds * 1000;
      const counted = await db
        .insertInto("auth_failures")
        .values([
          { key: keys.email, failures: 1, window_ends: windowEnds },
          { key: keys.address, failures: 1, window_ends: windowEnds },
        ])
        .onConflict((conflict) =>
          conflict.column("key").doUpdateSet({
            failures: sql<number>`case when auth_failures.window_ends <= ${now} then 1 else auth_failures.failures + 1 end`,
            window_ends: sql<number>`case when auth_failures.window_ends <= ${now} then excluded.window_ends else auth_failures.window_ends end`,
          }),
        )
        .returning(["key", "failures", "window_ends"])
        .execute();
      sweep();
      const over = counted.filter((row) => Number(row.failures) > (row.key === keys.email ? settings.emailAttempts : settings.addressAttempts));
      if (over.length === 0) return { ok: true };
      // A refused attempt is not made: both budgets get it back.
      await giveBack(keys.email);
      await giveBack(keys.address);
      return { ok: false, retryAfterMs: Math.max(1, ...over.map((row) => Number(row.window_ends) - now)) };
    },
    async succeeded(email, address) {
      await db.deleteFrom("auth_failures").where("key", "=", emailKey(email)).execute();
      await giveBack(addressKey(address));
    },
  };
}

export function loginLimitsFor(kind: DatabaseKind, db: Kysely<Database>, clock: Clock, settings: LoginLimitSettings): LoginLimits {
  return kind === "postgres" ? databaseLoginLimits(db, clock, settings) : memoryLoginLimits(clock, settings);
}

import { sql, type Kysely } from "kysely";
import type { Clock } from "../../clock.js";
import { prepareQuery } from "../../storage/prepared.js";
import type { Database } from "../../storage/schema.js";
import { fixedWindows } from "./windows.js";

/**
 * Guessing limits (docs/authentication.md): failed logins counted per source address
 * and per user over a window. Past either limit an attempt is refused without a look at
 * any token, so a stranger can neither guess on nor lock a whole organisation out.
 */
export interface GuessingLimits {
  /** Whether the source or the user is past its limit now, and the user's failures so far. */
  check(db: Kysely<Database>, source: string, userKey: string): Promise<{ over: boolean; userFailures: number }>;
  /** One more failure for the source and for the user. */
  countFailure(db: Kysely<Database>, source: string, userKey: string): Promise<void>;
  /** A user who got in starts again from nothing (called only when there were failures); the source does not. */
  forgetUser(db: Kysely<Database>, userKey: string): Promise<void>;
}

export interface LimitSettings {
  sourceFailures: number;
  userFailures: number;
  windowSeconds: number;
}

/**
 * One server on SQLite: the counts live in its memory. They are taken inside each
 * login's turn in the group commit (the database handle is not needed), and are not
 * undone should the commit fail: a failure may then count twice, never not at all.
 */
export function memoryGuessingLimits(settings: LimitSettings, clock: Clock): GuessingLimits {
  const bySource = fixedWindows(clock, settings.windowSeconds * 1000);
  const byUser = fixedWindows(clock, settings.windowSeconds * 1000);
  return {
    async check(_db, source, userKey) {
      const userFailures = byUser.count(userKey);
      return { over: userFailures >= settings.userFailures || bySource.count(source) >= settings.sourceFailures, userFailures };
    },
    async countFailure(_db, source, userKey) {
      bySource.add(source);
      byUser.add(userKey);
    },
    async forgetUser(_db, userKey) {
      byUser.forget(userKey);
    },
  };
}

/** How often, at most, the windows that have ended are deleted. */
const SWEEP_INTERVAL_MS = 60_000;

/**
 * Several nodes on one PostgreSQL: the counts are rows of `auth_failures`, so that n
 * nodes do not allow n times the attempts. A failure is one upsert (a window that has
 * ended starts again at one); the check is one read of two rows. Both run in the
 * login's transaction (`db` is the transaction): the count lands with the login's
 * audit record or not at all. A failure's upsert locks the two rows until the login
 * commits, after the audit chain's lock, which every login takes before it.
 */
export function databaseGuessingLimits(clock: Clock, settings: LimitSettings): GuessingLimits {
  // The caller gives keys without NUL, which PostgreSQL text cannot hold (see decide()).
  const sourceKey = (source: string) => `source:${source}`;
  const userKey = (key: string) => `user:${key}`;
  const windowMs = settings.windowSeconds * 1000;
  // Compiled against the dialect once, on first use.
  let prepared: { counts: ReturnType<typeof prepareCounts>; fail: ReturnType<typeof prepareFail> } | undefined;
  let nextSweep = 0;
  return {
    async check(db, source, user) {
      prepared ??= { counts: prepareCounts(db), fail: prepareFail(db) };
      const rows = (await db.executeQuery(prepared.counts({ sourceKey: sourceKey(source), userKey: userKey(user), now: clock.nowMs() }))).rows;
      const failuresOf = (key: string) => Number(rows.find((row) => row.key === key)?.failures ?? 0);
      const userFailures = failuresOf(userKey(user));
      return { over: userFailures >= settings.userFailures || failuresOf(sourceKey(source)) >= settings.sourceFailures, userFailures };
    },
    async countFailure(db, source, user) {
      prepared ??= { counts: prepareCounts(db), fail: prepareFail(db) };
      const now = clock.nowMs();
      await db.executeQuery(prepared.fail({ sourceKey: sourceKey(source), userKey: userKey(user), now, windowEnds: now + windowMs }));
      if (now >= nextSweep) {
        nextSweep = now + SWEEP_INTERVAL_MS;
        await db.deleteFrom("auth_failures").where("window_ends", "<=", now).execute();
      }
    },
    async forgetUser(db, user) {
      await db.deleteFrom("auth_failures").where("key", "=", userKey(user)).execute();
    },
  };
}

function prepareCounts(db: Kysely<Database>) {
  return prepareQuery<{ sourceKey: string; userKey: string; now: number }, { key: string; failures: number }>(db, (db, param) =>
    db
      .selectFrom("auth_failures")
      .select(["key", "failures"])
      .where("key", "in", [param("sourceKey"), param("userKey")])
      .where("window_ends", ">", param("now")),
  );
}

/** Both keys in one statement, so a failure is counted for both or for neither. */
function prepareFail(db: Kysely<Database>) {
  return prepareQuery<{ sourceKey: string; userKey: string; now: number; windowEnds: number }, never>(db, (db, param) =>
    db
      .insertInto("auth_failures")
      .values([
        { key: param("sourceKey"), failures: 1, window_ends: param("windowEnds") },
        { key: param("userKey"), failures: 1, window_ends: param("windowEnds") },
      ])
      .onConflict((conflict) =>
        conflict.column("key").doUpdateSet({
          failures: sql<number>`case when auth_failures.window_ends <= ${param("now")} then 1 else auth_failures.failures + 1 end`,
          window_ends: sql<number>`case when auth_failures.window_ends <= ${param("now")} then excluded.window_ends else auth_failures.window_ends end`,
        }),
      ),
  );
}

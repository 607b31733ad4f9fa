import { isIPv6 } from "node:net";
import { sql, type AliasedExpression, type ExpressionBuilder, type Kysely, type Transaction } from "kysely";
import type { Clock } from "../../clock.js";
import { prepareQuery } from "../../storage/prepared.js";
import type { Database } from "../../storage/schema.js";
import type { WriteScope } from "../../storage/write-batch.js";
import { fixedWindows } from "./windows.js";

/**
 * Guessing limits (docs/authentication.md): failed logins counted per source address
 * and per user over a window. Past either limit an attempt is refused without a look at
 * any token, so a stranger can neither guess on nor lock a whole organisation out.
 */
export interface GuessingLimits {
  /** Whether the source or the user is past its limit now, and the user's failures so far. */
  check(tx: LoginTransaction, source: string, userKey: string): Promise<{ over: boolean; userFailures: number }>;
  /** One more failure for the source and for the user. */
  countFailure(tx: LoginTransaction, source: string, userKey: string): Promise<void>;
  /** A user who got in starts again from nothing (called only when there were failures); the source does not. */
  forgetUser(tx: LoginTransaction, userKey: string): Promise<void>;
  /** PostgreSQL: the counts read by another statement, where that reads the same as `check`. */
  carried?: CarriedCounts;
}

/** What the carried counts take: the two keys and the moment. */
export type CountParams = { failuresSourceKey: string; failuresUserKey: string; failuresNow: number };

/**
 * The counts as two columns of another statement: a right passcode on PostgreSQL reads
 * them with the user's tokens, outside a transaction (each statement there sees what was
 * committed before it began, in a transaction or not), one round trip for both.
 */
export interface CarriedCounts {
  params(source: string, userKey: string): CountParams;
  columns(
    eb: ExpressionBuilder<Database, keyof Database>,
    param: <Name extends keyof CountParams>(name: Name) => CountParams[Name],
  ): [AliasedExpression<number | null, "source_failures">, AliasedExpression<number | null, "user_failures">];
  verdict(row: { source_failures: number | null; user_failures: number | null }): { over: boolean; userFailures: number };
}

/**
 * The place a source's failures are counted under. An IPv6 address counts with the rest
 * of its /64, the block one subscriber or machine is given: one attacker holds 2^64
 * addresses there, and counting each alone would let it try without end. An IPv4 address
 * written as IPv6 (::ffff:192.0.2.1) is the IPv4 address. Anything else (a RADIUS
 * Calling-Station-Id may be a MAC address or a phone number) is counted as it is.
 */
export function sourceLimitKey(source: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(source);
  if (mapped) return mapped[1]!;
  if (!isIPv6(source)) return source;
  const [head = "", tail = ""] = source.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  // An embedded IPv4 tail is two groups; the /64 lies in the first four either way.
  const groups = source.includes("::") ? [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((group) => Number.parseInt(group, 16).toString(16))
    .join(":")}::/64`;
}

/** The login's transaction: the counts are read and taken in it, and undone with it. */
export interface LoginTransaction {
  trx: Transaction<Database>;
  scope: WriteScope;
}

export interface LimitSettings {
  sourceFailures: number;
  userFailures: number;
  windowSeconds: number;
}

/**
 * One server on SQLite: the counts live in its memory. They are taken inside each
 * login's turn in the group commit, so the logins after it in the group see them, and
 * are undone if that transaction rolls back (its logins then run again one by one).
 */
export function memoryGuessingLimits(settings: LimitSettings, clock: Clock): GuessingLimits {
  const bySource = fixedWindows(clock, settings.windowSeconds * 1000);
  const byUser = fixedWindows(clock, settings.windowSeconds * 1000);
  return {
    async check(_tx, source, userKey) {
      const userFailures = byUser.count(userKey);
      return { over: userFailures >= settings.userFailures || bySource.count(source) >= settings.sourceFailures, userFailures };
    },
    async countFailure({ scope }, source, userKey) {
      bySource.add(source);
      byUser.add(userKey);
      scope.onRollback(() => {
        bySource.remove(source);
        byUser.remove(userKey);
      });
    },
    async forgetUser({ scope }, userKey) {
      scope.onRollback(byUser.forget(userKey));
    },
  };
}

/** How often, at most, a node deletes the windows that have ended. */
const SWEEP_INTERVAL_MS = 60_000;

/** Rows a sweep deletes in one statement. */
const SWEEP_BATCH = 1000;

/**
 * Deletes rows of `auth_failures` whose window has ended, at most once a minute, in
 * statements of a thousand rows until none is left, on a connection of its own and
 * without waiting for a row another transaction holds (SKIP LOCKED): never inside a
 * login's transaction, where it would hold a thousand rows other logins count on, and
 * never in a lock wait that could close a cycle with a login. Housekeeping
 * only: should a statement fail, the next sweep carries on.
 */
export function endedWindowSweeper(db: Kysely<Database>, clock: Clock): () => void {
  let nextSweep = 0;
  const sweep = async (now: number) => {
    for (;;) {
      const deleted = await sql`delete from auth_failures where key in (select key from auth_failures where window_ends <= ${now} limit ${SWEEP_BATCH} for update skip locked)`.execute(db);
      if (Number(deleted.numAffectedRows ?? 0) < SWEEP_BATCH) return;
    }
  };
  return () => {
    const now = clock.nowMs();
    if (now < nextSweep) return;
    nextSweep = now + SWEEP_INTERVAL_MS;
    void sweep(now).catch(() => undefined);
  };
}

/**
 * Several nodes on one PostgreSQL: the counts are rows of `auth_failures`, so that n
 * nodes do not allow n times the attempts. A failure is one upsert (a window that has
 * ended starts again at one); the check is one read of two rows. Both run in the
 * login's transaction (the `trx` each method is given): the count lands with the
 * login's audit record or not at all. A failure's upsert locks the two rows until the
 * login commits, the address's before the user's (the order of its VALUES). Every
 * login locks in one order, its user's token rows by serial before either count, so
 * logins cannot deadlock over them; the rows of ended windows are swept elsewhere
 * (`endedWindowSweeper`).
 */
export function databaseGuessingLimits(db: Kysely<Database>, clock: Clock, settings: LimitSettings): GuessingLimits {
  // The caller gives keys without NUL, which PostgreSQL text cannot hold (see decide()).
  const sourceKey = (source: string) => `source:${source}`;
  const userKey = (key: string) => `user:${key}`;
  const windowMs = settings.windowSeconds * 1000;
  // Compiled against the dialect once, on first use.
  let prepared: { counts: ReturnType<typeof prepareCounts>; fail: ReturnType<typeof prepareFail> } | undefined;
  const sweep = endedWindowSweeper(db, clock);
  const verdict = (sourceFailures: number, userFailures: number) => ({ over: userFailures >= settings.userFailures || sourceFailures >= settings.sourceFailures, userFailures });
  const failuresOf = (eb: ExpressionBuilder<Database, keyof Database>, key: string, now: number) =>
    eb.selectFrom("auth_failures").select("failures").where("key", "=", key).where("window_ends", ">", now).$asScalar().$castTo<number | null>();
  return {
    async check({ trx }, source, user) {
      prepared ??= { counts: prepareCounts(trx), fail: prepareFail(trx) };
      const rows = (await trx.executeQuery(prepared.counts({ sourceKey: sourceKey(source), userKey: userKey(user), now: clock.nowMs() }))).rows;
      const countOf = (key: string) => Number(rows.find((row) => row.key === key)?.failures ?? 0);
      return verdict(countOf(sourceKey(source)), countOf(userKey(user)));
    },
    carried: {
      params: (source, user) => ({ failuresSourceKey: sourceKey(source), failuresUserKey: userKey(user), failuresNow: clock.nowMs() }),
      columns: (eb, param) => [
        failuresOf(eb, param("failuresSourceKey"), param("failuresNow")).as("source_failures"),
        failuresOf(eb, param("failuresUserKey"), param("failuresNow")).as("user_failures"),
      ],
      verdict: (row) => verdict(Number(row.source_failures ?? 0), Number(row.user_failures ?? 0)),
    },
    async countFailure({ trx }, source, user) {
      prepared ??= { counts: prepareCounts(trx), fail: prepareFail(trx) };
      const now = clock.nowMs();
      await trx.executeQuery(prepared.fail({ sourceKey: sourceKey(source), userKey: userKey(user), now, windowEnds: now + windowMs }));
      sweep();
    },
    async forgetUser({ trx }, user) {
      await trx.deleteFrom("auth_failures").where("key", "=", userKey(user)).execute();
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

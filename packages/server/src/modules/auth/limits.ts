import { sql, type DeleteQueryBuilder, type DeleteResult, type Kysely, type QueryCreator, type SelectQueryBuilder, type Transaction } from "kysely";
import type { Clock } from "../../clock.js";
import { ipv6Groups, lastIPv4, mappedIPv4 } from "../applications/addresses.js";
import { prepareQuery } from "../../storage/prepared.js";
import type { Database } from "../../storage/schema.js";
import type { WriteScope } from "../../storage/write-batch.js";
import { fixedWindows } from "./windows.js";

/**
 * Guessing limits (docs/authentication.md): failed logins counted per source address
 * and per user over a window. Past either limit an attempt is refused without a look at
 * any token, so a stranger can neither guess on nor lock a whole organisation out.
 *
 * A typed passcode is counted against its user when it arrives, before it is checked
 * (`take`), and a success gives the count back with the rest (`succeeded`): guesses sent
 * all at once, on one node or several, stop at the user's limit as if sent one by one.
 * The source's failures are counted once known (`failed`); that limit is read, not taken,
 * because many people's logins in flight share one source when a NAS sends no address.
 */
export interface GuessingLimits {
  /** Push requests (no passcode to guess): whether the source or the user is past its limit now. */
  check(tx: LoginTransaction, source: string, userKey: string): Promise<{ over: boolean }>;
  /**
   * A typed passcode: over a limit, or one attempt taken from the user's budget. When
   * `takenAtOnce` took it already, its verdict on the user is given and the source's
   * count is read again, in the transaction.
   */
  take(tx: LoginTransaction, source: string, userKey: string, taken?: TakenVerdict): Promise<{ over: boolean }>;
  /** A taken attempt failed: one more failure for the source (the user's count is taken already). */
  failed(tx: LoginTransaction, source: string): Promise<void>;
  /** A taken attempt got in: the user starts again from nothing; the source does not. */
  succeeded(tx: LoginTransaction, userKey: string): Promise<void>;
  /** A push request for nobody: one more failure for the source and for the user id. */
  countFailure(tx: LoginTransaction, source: string, userKey: string): Promise<void>;
  /** PostgreSQL: the taking as part of another statement, outside a transaction. */
  takenAtOnce?: TakenAtOnce;
}

/** What taking a user's attempt found: whether the user, or the source as last read, is past its limit. */
export type TakenVerdict = { over: boolean; userOver: boolean };

/** What the taking at once needs: the two keys, the moment and the window's end. */
export type TakeParams = { takeSourceKey: string; takeUserKey: string; takeNow: number; takeWindowEnds: number };

/**
 * The taking as part of a right passcode's first statement on PostgreSQL, which reads
 * the user's tokens outside a transaction: the user's attempt is counted by the
 * statement's CTE `taken` (committed with it), and the statement selects from `taken`,
 * one row, with the two counts as columns, to which the caller joins what it reads.
 */
export interface TakenAtOnce {
  params(source: string, userKey: string): TakeParams;
  /** One row: the user's count with this attempt (`user_attempts`) and the source's (`source_failures`). */
  select(db: Kysely<Database>, param: <Name extends keyof TakeParams>(name: Name) => TakeParams[Name]): SelectQueryBuilder<Database & { taken: { failures: number } }, "taken", { user_attempts: number; source_failures: number | null }>;
  verdict(row: { user_attempts: number | null; source_failures: number | null }): TakenVerdict;
  /** The success's delete of the user's count, for the statement that stores the accepted step. */
  forget(db: QueryCreator<Database>, param: <Name extends keyof TakeParams>(name: Name) => TakeParams[Name]): DeleteQueryBuilder<Database, "auth_failures", DeleteResult>;
}

/**
 * The place a source's failures are counted under. An IPv6 address counts with the rest
 * of its /64, the block one subscriber or machine is given: one attacker holds 2^64
 * addresses there, and counting each alone would let it try without end. An IPv4 address
 * written as IPv6 (::ffff:192.0.2.1, ::ffff:c000:201) is the IPv4 address, and so is an
 * IPv4 client as a translator shows it (NAT64/SIIT's 64:ff9b::/96 of RFC 6052, the old
 * IPv4-compatible ::/96 and IPv4-translated ::ffff:0:0:0/96): counted under one /64, every
 * IPv4 client behind the translator would share one limit. (A translator's own
 * network-specific prefix cannot be told from any IPv6 /64.) Anything else (a RADIUS
 * Calling-Station-Id may be a MAC address or a phone number) is counted as it is.
 */
export function sourceLimitKey(source: string): string {
  const ipv4 = mappedIPv4(source);
  if (ipv4) return ipv4;
  const groups = ipv6Groups(source);
  if (!groups) return source;
  if (embedsIPv4(groups)) return lastIPv4(groups);
  return `${groups
    .slice(0, 4)
    .map((group) => group.toString(16))
    .join(":")}::/64`;
}

/** 64:ff9b::/96, ::/96 (but :: and ::1) or ::ffff:0:0:0/96: the last 32 bits are an IPv4 client's address. */
function embedsIPv4(groups: number[]): boolean {
  const head = (first: number[]) => first.every((group, index) => groups[index] === group);
  if (head([0x64, 0xff9b, 0, 0, 0, 0])) return true;
  if (head([0, 0, 0, 0, 0xffff, 0])) return true;
  return head([0, 0, 0, 0, 0, 0]) && groups[6] !== 0;
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
  const over = (source: string, userKey: string) => byUser.count(userKey) >= settings.userFailures || bySource.count(source) >= settings.sourceFailures;
  const counted = (scope: WriteScope, windows: ReturnType<typeof fixedWindows>, key: string) => {
    windows.add(key);
    scope.onRollback(() => windows.remove(key));
  };
  return {
    async check(_tx, source, userKey) {
      return { over: over(source, userKey) };
    },
    async take({ scope }, source, userKey, taken) {
      if (taken) return { over: taken.userOver || bySource.count(source) >= settings.sourceFailures };
      if (over(source, userKey)) return { over: true };
      counted(scope, byUser, userKey);
      return { over: false };
    },
    async failed({ scope }, source) {
      counted(scope, bySource, source);
    },
    async succeeded({ scope }, userKey) {
      scope.onRollback(byUser.forget(userKey));
    },
    async countFailure({ scope }, source, userKey) {
      counted(scope, bySource, source);
      counted(scope, byUser, userKey);
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
 * nodes do not allow n times the attempts. Taking a user's attempt is one upsert that
 * returns the new count (a window that has ended starts again at one), so two attempts
 * taken at once, on any nodes, get two different counts; a failure adds one to the
 * source's row; a success deletes the user's row. All of it runs in the login's
 * transaction (the `trx` each method is given), or, for a right passcode, as part of
 * its statements (`takenAtOnce`, and the delete in the statement that stores the step).
 *
 * Locks: a login's token rows by serial, then the user's count, then the source's. A
 * right passcode's first statement takes the user's count alone and commits; in a
 * transaction the user's count is deleted (a success) or given back (refused for its
 * source) after the token rows, and the source's count is upserted (a failure) last.
 * Only a transaction that takes the attempt itself (a user id that cannot exist, which
 * holds no token) or a push request for nobody locks the user's count first, and they
 * touch no token row. A push login's denial counts against its sources in the answer's
 * transaction, after the challenge rows and without touching a token or a user's count,
 * its sources in the keys' order (a fraud report denies several logins). So
 * logins cannot deadlock over them; the rows of ended windows
 * are swept elsewhere (`endedWindowSweeper`), skipping rows a login holds.
 */
export function databaseGuessingLimits(db: Kysely<Database>, clock: Clock, settings: LimitSettings): GuessingLimits {
  // The caller gives keys without NUL, which PostgreSQL text cannot hold (see decide()).
  const sourceKey = (source: string) => `source:${source}`;
  const userKey = (key: string) => `user:${key}`;
  const windowMs = settings.windowSeconds * 1000;
  // Compiled against the dialect once, on first use.
  let prepared: ReturnType<typeof prepareAll> | undefined;
  const sweep = endedWindowSweeper(db, clock);
  const takeParams = (source: string, user: string): TakeParams => {
    const now = clock.nowMs();
    return { takeSourceKey: sourceKey(source), takeUserKey: userKey(user), takeNow: now, takeWindowEnds: now + windowMs };
  };
  // The user's count includes the attempt just taken.
  const verdict = (row: { user_attempts: number | null; source_failures: number | null }): TakenVerdict => {
    const userOver = Number(row.user_attempts ?? 0) > settings.userFailures;
    return { over: userOver || Number(row.source_failures ?? 0) >= settings.sourceFailures, userOver };
  };
  return {
    async check({ trx }, source, user) {
      prepared ??= prepareAll(trx);
      const rows = (await trx.executeQuery(prepared.counts({ sourceKey: sourceKey(source), userKey: userKey(user), now: clock.nowMs() }))).rows;
      const countOf = (key: string) => Number(rows.find((row) => row.key === key)?.failures ?? 0);
      return { over: countOf(userKey(user)) >= settings.userFailures || countOf(sourceKey(source)) >= settings.sourceFailures };
    },
    async take({ trx }, source, user, taken) {
      prepared ??= prepareAll(trx);
      let found: TakenVerdict;
      if (taken) {
        const row = (await trx.executeQuery(prepared.sourceCount({ sourceKey: sourceKey(source), now: clock.nowMs() }))).rows[0];
        found = { over: taken.userOver || Number(row?.failures ?? 0) >= settings.sourceFailures, userOver: taken.userOver };
      } else {
        const row = (await trx.executeQuery(prepared.take(takeParams(source, user)))).rows[0]!;
        sweep();
        found = verdict(row);
      }
      // Refused for its source alone: the user gets the attempt back, or a source past
      // its limit could still spend the limit of every user it names.
      if (found.over && !found.userOver) await trx.executeQuery(prepared.giveBack({ userKey: userKey(user) }));
      return { over: found.over };
    },
    takenAtOnce: {
      params: takeParams,
      select: (db, param) => selectTaken(db, param),
      verdict,
      forget: (db, param) => db.deleteFrom("auth_failures").where("key", "=", param("takeUserKey")),
    },
    async failed({ trx }, source) {
      prepared ??= prepareAll(trx);
      const now = clock.nowMs();
      await trx.executeQuery(prepared.fail({ sourceKey: sourceKey(source), now, windowEnds: now + windowMs }));
      sweep();
    },
    async succeeded({ trx }, user) {
      await trx.deleteFrom("auth_failures").where("key", "=", userKey(user)).execute();
    },
    async countFailure({ trx }, source, user) {
      prepared ??= prepareAll(trx);
      const now = clock.nowMs();
      await trx.executeQuery(prepared.failBoth({ sourceKey: sourceKey(source), userKey: userKey(user), now, windowEnds: now + windowMs }));
      sweep();
    },
  };
}

type Param<Params> = <Name extends keyof Params & string>(name: Name) => Params[Name];

/** One more failure for the key, or the first of a new window when its window has ended. */
function upsertFailures(db: QueryCreator<Database>, keys: unknown[], now: unknown, windowEnds: unknown) {
  return db
    .insertInto("auth_failures")
    .values(keys.map((key) => ({ key: key as string, failures: 1, window_ends: windowEnds as number })))
    .onConflict((conflict) =>
      conflict.column("key").doUpdateSet({
        failures: sql<number>`case when auth_failures.window_ends <= ${now} then 1 else auth_failures.failures + 1 end`,
        window_ends: sql<number>`case when auth_failures.window_ends <= ${now} then excluded.window_ends else auth_failures.window_ends end`,
      }),
    );
}

/** Takes the user's attempt (the CTE `taken`) and selects from it, one row, the user's and the source's counts. */
function selectTaken(db: Kysely<Database>, param: Param<TakeParams>) {
  return db
    .with("taken", (qc) => upsertFailures(qc, [param("takeUserKey")], param("takeNow"), param("takeWindowEnds")).returning("failures"))
    .selectFrom("taken")
    .select((eb) => [
      "taken.failures as user_attempts",
      eb.selectFrom("auth_failures").select("failures").where("key", "=", param("takeSourceKey")).where("window_ends", ">", param("takeNow")).$asScalar().$castTo<number | null>().as("source_failures"),
    ]);
}

function prepareAll(db: Kysely<Database>) {
  return {
    counts: prepareQuery<{ sourceKey: string; userKey: string; now: number }, { key: string; failures: number }>(db, (db, param) =>
      db
        .selectFrom("auth_failures")
        .select(["key", "failures"])
        .where("key", "in", [param("sourceKey"), param("userKey")])
        .where("window_ends", ">", param("now")),
    ),
    sourceCount: prepareQuery<{ sourceKey: string; now: number }, { failures: number }>(db, (db, param) =>
      db.selectFrom("auth_failures").select("failures").where("key", "=", param("sourceKey")).where("window_ends", ">", param("now")),
    ),
    giveBack: prepareQuery<{ userKey: string }, never>(db, (db, param) =>
      db
        .updateTable("auth_failures")
        .set((eb) => ({ failures: eb("failures", "-", 1) }))
        .where("key", "=", param("userKey"))
        .where("failures", ">", 0),
    ),
    /** The user's attempt and the source's count in one statement. */
    take: prepareQuery<TakeParams, { user_attempts: number; source_failures: number | null }>(db, selectTaken),
    fail: prepareQuery<{ sourceKey: string; now: number; windowEnds: number }, never>(db, (db, param) => upsertFailures(db, [param("sourceKey")], param("now"), param("windowEnds"))),
    /** Both keys in one statement, so a failure is counted for both or for neither; the user's row first (the order of the VALUES). */
    failBoth: prepareQuery<{ sourceKey: string; userKey: string; now: number; windowEnds: number }, never>(db, (db, param) =>
      upsertFailures(db, [param("userKey"), param("sourceKey")], param("now"), param("windowEnds")),
    ),
  };
}

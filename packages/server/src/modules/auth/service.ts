import type { Kysely, QueryCreator, SelectQueryBuilder, Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { prepareQuery } from "../../storage/prepared.js";
import type { ApplicationRow, Database, TokenRow } from "../../storage/schema.js";
import { writeBatcherFor, type WriteBatcher } from "../../storage/write-batch.js";
import { auditFields, prepareAuditedUpdate, type AuditEntry } from "../audit/service.js";
import type { Principal } from "../operators/access.js";
import { effectivePolicy } from "../policy/service.js";
import type { Metrics } from "../metrics/metrics.js";
import type { OpenedChallenge, PushService } from "../push/service.js";
import { databaseGuessingLimits, memoryGuessingLimits, sourceLimitKey, type GuessingLimits, type LoginTransaction, type TakenVerdict, type TakeParams } from "./limits.js";
import { typedPasscode, verifyPasscode } from "./verify.js";

export type RejectReason = "user_unknown" | "no_token" | "wrong" | "replayed" | "locked" | "rate_limited" | "push_unavailable" | "push_blocked";

export type AuthResult =
  | { result: "accept"; serial: string; userId: string }
  | { result: "reject"; reason: RejectReason; message: string }
  | { result: "pending"; challengeId: string; numberToMatch: string; expiresAt: string; message: string };

/** How the answer to an Access-Challenge ends; `no_answer`: the user did not answer in time. */
export type RedeemResult =
  | { result: "accept"; serial: string; userId: string }
  | { result: "reject"; reason: "unknown_challenge" | "redeemed" | "no_answer" | "denied" | "expired" | "cancelled" | "no_token" };

/** A RADIUS request refused before any user or passcode is looked at: another method than PAP, or no User-Name. */
export type RefusedReason = "not_pap" | "no_user_name";

export interface AuthRequest {
  application: Pick<ApplicationRow, "id" | "name" | "virtual_server_id" | "push_otp" | "resource_name" | "push_timeout_seconds">;
  userId: string;
  passcode: string;
  /**
   * Where the person logging in is: the REST caller's end-user address when it gives
   * one, RADIUS Calling-Station-Id, else the client's own address.
   */
  source: string;
  method: "rest" | "radius";
  /**
   * Who asked, for the audit trail: the RADIUS client's (or REST caller's) own address,
   * and the NAS-Identifier a RADIUS client gives.
   */
  client?: { address: string; nasIdentifier?: string | null };
}

/**
 * The audit record of one login decision, as the application that asked: for whom, how
 * it ended, the end user's source, the client's own address and NAS; never the passcode.
 * `userId` and `source` come with any NUL written as \0.
 */
function loginRecord(
  request: Pick<AuthRequest, "application" | "method" | "client">,
  ended: AuthResult | RedeemResult | { result: "reject"; reason: RefusedReason },
  who: { userId: string; source: string; userPk: string | null; serial: string | null },
  details: Record<string, unknown>,
): AuditEntry {
  const { application, method, client } = request;
  return {
    action: `auth.${ended.result}`,
    virtualServerId: application.virtual_server_id,
    targetType: who.serial ? "token" : "user",
    targetId: who.serial ?? who.userId,
    tokenSerial: who.serial,
    userPk: who.userPk,
    reason: ended.result === "reject" ? ended.reason : null,
    details: {
      application: application.name,
      applicationId: application.id,
      method,
      source: who.source,
      userId: who.userId,
      ...(client ? { client: client.address } : {}),
      ...(client?.nasIdentifier != null ? { nasIdentifier: client.nasIdentifier } : {}),
      ...details,
    },
  };
}

const messages: Record<RejectReason, string> = {
  user_unknown: "Access denied",
  no_token: "Access denied",
  wrong: "Access denied",
  replayed: "Access denied",
  locked: "Access denied",
  rate_limited: "Too many attempts; try again later",
  push_unavailable: "Push OTP is not available for you here: type the passcode from your app",
  push_blocked: "Push OTP is not available for you here: type the passcode from your app",
};

/**
 * How long after a push login would have expired its approval still lets the user in:
 * the application that waits for it (the RADIUS client coming back with the State, the
 * REST application reading the outcome) uses it within the challenge's life, or this
 * soon after when the user approved at the last moment. Later it counts as expired, so
 * that a State kept for hours is no key.
 */
export const APPROVAL_GRACE_MS = 60_000;

/**
 * Letters kept for asking something other than push (an SMS or email code, say); none is
 * in use yet, so today every single character asks for push.
 */
const RESERVED_LETTERS = new Set<string>();

/**
 * An empty passcode, or one character that is not a reserved letter, asks for Push OTP
 * (DESIGN section 4); whitespace does not count (see typedPasscode). A character is a
 * Unicode code point: an emoji typed on a phone's keyboard is one, though JavaScript
 * counts it as two.
 */
export function asksForPush(passcode: string): boolean {
  return typedAsksForPush(typedPasscode(passcode));
}

/** asksForPush for a passcode whose whitespace is gone already (a login's, in decide). */
function typedAsksForPush(typed: string): boolean {
  if (typed.length === 0) return true;
  const characters = [...typed];
  return characters.length === 1 && !RESERVED_LETTERS.has(typed.toLowerCase());
}

/**
 * Guessing limits. Failures from one place (for RADIUS the end user's
 * Calling-Station-Id when the client sends it) and against one user are counted; past
 * the limit the attempt is refused without touching any token. A stranger can thus cost
 * a user a few attempts, but cannot drive every token of an organisation into lockout
 * from one address: token failures only count while the source is within its limit.
 * Counted in memory on SQLite (one server), in the database on PostgreSQL (every node).
 */
const LIMITS = { sourceFailures: 30, userFailures: 10, windowSeconds: 10 * 60 };

/** Authentications are audited as the application that asked. */
function authPrincipal(application: AuthRequest["application"]): Principal {
  return {
    kind: "system",
    operatorId: null,
    actor: `application:${application.name}`,
    role: "admin",
    scope: { virtualServerId: application.virtual_server_id, path: "/", includesChildren: true },
  };
}

/**
 * What a login reads of each token that may answer: its state, its key, and what the
 * passcode check needs. Only these columns: better-sqlite3 builds an object per row, and
 * the whole row made the read half again as dear.
 */
const LOGIN_TOKEN_COLUMNS = [
  "serial", "virtual_server_id", "user_pk", "state", "failures", "locked_until", "key_ciphertext", "key_id",
  "otp_mode", "digits", "algorithm", "period_seconds", "last_totp_step", "drift_steps", "hotp_counter",
] as const satisfies readonly (keyof TokenRow)[];

type LoginToken = Pick<TokenRow, (typeof LOGIN_TOKEN_COLUMNS)[number]>;

/** A token locked for a while whose lock duration has passed: it unlocks at its next login. */
function lockRunOut(token: LoginToken, now: number): boolean {
  return token.state === "locked" && token.locked_until !== null && token.locked_until <= now;
}

/**
 * The statements every passcode check runs, compiled once. The user and the tokens that
 * may answer come in one query: a user without such tokens is one row of nulls.
 */
export function preparePasscodeQueries(db: Kysely<Database>) {
  return {
    userTokens: prepareQuery<UserTokensParams, UserTokenRow>(db, userTokens),
    userPk: prepareQuery<{ virtualServerId: string; userId: string }, { id: string }>(db, (db, param) =>
      db.selectFrom("users").select("id").where("virtual_server_id", "=", param("virtualServerId")).where("user_id", "=", param("userId")),
    ),
    storeTotp: prepareQuery<StoreTotp, never>(db, storeTotp),
    storeHotp: prepareQuery<StoreHotp, never>(db, storeHotp),
    resetFailures: prepareQuery<ResetFailures, never>(db, resetFailures),
    lockForSuccess: prepareQuery<{ userPk: string; serial: string }, { serial: string }>(db, lockForSuccess),
    /** The state of the token that approved a push login, found only while it is still that user's. */
    approverState: prepareQuery<{ serial: string; userPk: string }, { state: string }>(db, (db, param) =>
      db.selectFrom("tokens").select("state").where("serial", "=", param("serial")).where("user_pk", "=", param("userPk")),
    ),
  };
}

type Param<Params> = <Name extends keyof Params & string>(name: Name) => Params[Name];
type UserTokensParams = { virtualServerId: string; userId: string };
type UserTokenRow = { holder_pk: string } & { [K in keyof LoginToken]: LoginToken[K] | null };

/** The user and the tokens that may answer, in one query: a user without such tokens is one row of nulls. */
function userTokens(db: QueryCreator<Database>, param: Param<UserTokensParams>) {
  return withLoginTokens(db.selectFrom("users").where("users.virtual_server_id", "=", param("virtualServerId")).where("users.user_id", "=", param("userId")));
}

/** The tokens that may answer joined to the user `query` reads, with the columns a login uses and the user's key. */
function withLoginTokens(query: SelectQueryBuilder<Database, "users", object>) {
  return query
    .leftJoin("tokens", (join) => join.onRef("tokens.user_pk", "=", "users.id").on("tokens.state", "in", ["active", "locked"]))
    .select(LOGIN_TOKEN_COLUMNS.map((column) => `tokens.${column}` as const))
    .select("users.id as holder_pk")
    .orderBy("tokens.serial");
}
type StoreTotp = { serial: string; step: number; driftSteps: number; now: number };
type StoreHotp = { serial: string; counter: number; nextCounter: number; now: number };

type ResetFailures = { userPk: string; now: number };

/**
 * A success ends the user's run of failures on each of their active tokens, not only on
 * the one that answered: a wrong passcode counts against every one of them, so only a
 * run of failures with no success between locks any.
 */
export function resetFailures(db: QueryCreator<Database>, param: Param<ResetFailures>) {
  return db.updateTable("tokens").set({ failures: 0, updated_at: param("now") }).where("user_pk", "=", param("userPk")).where("state", "=", "active").where("failures", ">", 0);
}

/**
 * `resetFailures` for a statement of its own on PostgreSQL (after a fast accept, whose
 * compare-and-set committed alone): the rows are taken in serial order, as a
 * wrong passcode takes them. A plain UPDATE takes them in the order its plan reads them,
 * which is the table's own where PostgreSQL scans the table or a bitmap of it: with a
 * wrong passcode at the same user holding a token of a smaller serial, each would wait
 * for a row the other holds (reproduced with such a plan: "deadlock detected"). Here
 * the CTE locks the rows as they come out of its sort, in serial order, and the UPDATE
 * writes only rows the CTE gave it, each locked before it is written (locking and
 * writing may alternate row by row; the locks are still taken in serial order).
 */
export function resetFailuresInOrder(db: QueryCreator<Database>, param: Param<ResetFailures>) {
  return db
    .with(
      (cte) => cte("failed").materialized(),
      (db) => db.selectFrom("tokens").select("serial").where("user_pk", "=", param("userPk")).where("state", "=", "active").where("failures", ">", 0).orderBy("serial").forNoKeyUpdate(),
    )
    .updateTable("tokens")
    .from("failed")
    .set({ failures: 0, updated_at: param("now") })
    .whereRef("tokens.serial", "=", "failed.serial");
}

/**
 * On PostgreSQL, before a success stores its token's step and resets the others: the
 * user's active tokens it will write (the answering one, and those with failures), locked
 * in serial order, the order in which a wrong passcode counts against them. Taken the
 * other way round (the answering token first, then a token with a smaller serial), a
 * success and a wrong guess at the same user could each hold a row the other waits for.
 */
export function lockForSuccess(db: QueryCreator<Database>, param: Param<{ userPk: string; serial: string }>) {
  return db
    .selectFrom("tokens")
    .select("serial")
    .where("user_pk", "=", param("userPk"))
    .where("state", "=", "active")
    .where((eb) => eb.or([eb("failures", ">", 0), eb("serial", "=", param("serial"))]))
    .orderBy("serial")
    .forNoKeyUpdate();
}

/** Whether tokens other than the one that answered still count failures: `resetFailures` has work only then. */
function othersFailed(tokens: Array<Pick<LoginToken, "serial" | "state" | "failures">>, answered: string): boolean {
  return tokens.some((token) => token.serial !== answered && token.state === "active" && Number(token.failures) > 0);
}

/** Compare-and-set of an accepted TOTP step: only a later step than the last one accepted is stored. */
function storeTotp(db: QueryCreator<Database>, param: Param<StoreTotp>) {
  return db
    .updateTable("tokens")
    .set({ last_totp_step: param("step"), drift_steps: param("driftSteps"), failures: 0, updated_at: param("now") })
    .where("serial", "=", param("serial"))
    .where("state", "=", "active")
    .where((eb) => eb.or([eb("last_totp_step", "is", null), eb("last_totp_step", "<", param("step"))]));
}

/** Compare-and-set of an HOTP counter: only from the counter the check was made against. */
function storeHotp(db: QueryCreator<Database>, param: Param<StoreHotp>) {
  return db
    .updateTable("tokens")
    .set({ hotp_counter: param("nextCounter"), failures: 0, updated_at: param("now") })
    .where("serial", "=", param("serial"))
    .where("state", "=", "active")
    .where("hotp_counter", "=", param("counter"));
}

export function createAuthService(
  deps: Pick<CoreDeps, "db" | "kind" | "clock" | "audit" | "keyring"> & {
    push?: PushService;
    metrics?: Metrics;
    writes?: WriteBatcher;
    limits?: GuessingLimits;
    /** Told when work after a committed decision failed (for the log): the decision stands. */
    onFollowUpFailure?: (what: string, error: unknown) => void;
  },
) {
  const { db, clock, audit, keyring } = deps;
  // Grouped on SQLite, where there is one writer and the commit is the dear part. Not on
  // PostgreSQL: a group would lock several users' token rows in the order its logins
  // came, and another node's group could take them the other way round and deadlock.
  // There concurrent commits share a flush of the log anyway.
  const writes = deps.writes ?? writeBatcherFor(deps.kind, db);
  const queries = preparePasscodeQueries(db);
  const limits = deps.limits ?? (deps.kind === "postgres" ? databaseGuessingLimits(db, clock, LIMITS) : memoryGuessingLimits(LIMITS, clock));
  // PostgreSQL writes audit records to audit_pending, which a statement can do along with
  // its change; and the guessing limits' counts there are rows another statement can
  // take and read.
  const taken = limits.takenAtOnce;
  const atOnce =
    deps.kind === "postgres" && taken
      ? {
          taken,
          // One row at least, also for an unknown user, since it selects from the taking.
          takeWithUserTokens: prepareQuery<UserTokensParams & TakeParams, { [K in keyof UserTokenRow]: UserTokenRow[K] | null } & { user_attempts: number; source_failures: number | null }>(db, (db, param) =>
            withLoginTokens(
              // The user joined to the taking (so one row also when there is no such user):
              // typed as a query of users, which is all the join needs.
              taken
                .select(db, param)
                .leftJoin("users", (join) => join.on("users.virtual_server_id", "=", param("virtualServerId")).on("users.user_id", "=", param("userId"))) as unknown as SelectQueryBuilder<Database, "users", object>,
            ),
          ),
          storeTotp: prepareAuditedUpdate<StoreTotp & TakeParams>(db, storeTotp, taken.forget),
          storeHotp: prepareAuditedUpdate<StoreHotp & TakeParams>(db, storeHotp, taken.forget),
          resetFailuresInOrder: prepareQuery<ResetFailures, never>(db, resetFailuresInOrder),
        }
      : null;

  /**
   * PostgreSQL, a right passcode: two round trips where a transaction took six. The
   * first statement takes the user's attempt from the guessing limits (committed with
   * it, outside a transaction) and reads the user's tokens and the source's count; the
   * second is the compare-and-set, the login's audit record and the delete of the
   * user's count, a transaction of its own. Anything else goes on to the general path,
   * in a transaction from a fresh read, with the attempt already taken (`{ taken }`): an
   * unknown user, a limit reached, a token whose lock has run out, a wrong passcode, or
   * a compare-and-set another login won (which the general path then finds replayed).
   * Null on SQLite, where the general path takes the attempt itself.
   */
  async function acceptAtOnce(request: AuthRequest, passcode: string, who: { vsId: string; userId: string; source: string; sourceKey: string; userKey: string; principal: Principal }): Promise<AuthResult | { taken: TakenVerdict } | null> {
    if (!atOnce) return null;
    const params = atOnce.taken.params(who.sourceKey, who.userKey);
    const rows = (await db.executeQuery(atOnce.takeWithUserTokens({ virtualServerId: who.vsId, userId: who.userId, ...params }))).rows;
    const limit = atOnce.taken.verdict(rows[0]!);
    const onward = { taken: limit };
    // An unknown user is one row with the counts and nulls.
    const holderPk = rows[0]!.holder_pk;
    if (holderPk === null || limit.over) return onward;
    const held = rows.filter((row) => row.serial !== null) as LoginToken[];
    const now = clock.nowMs();
    if (held.some((token) => lockRunOut(token, now))) return onward;
    for (const token of held) {
      if (token.state !== "active" || token.key_ciphertext === null) continue;
      const key = keyring.decrypt(token.key_ciphertext, token.key_id!, token.serial);
      const verdict = verifyPasscode(token, key, passcode, now);
      key.fill(0);
      if (!verdict.ok) continue;
      const result: AuthResult = { result: "accept", serial: token.serial, userId: who.userId };
      const record = auditFields(who.principal, loginRecord(request, result, { userId: who.userId, source: who.source, userPk: holderPk, serial: token.serial }, { push: false }), now);
      const stored = await db.executeQuery(
        verdict.mode === "totp"
          ? atOnce.storeTotp({ serial: token.serial, step: verdict.step, driftSteps: verdict.driftSteps, now, ...params, ...record })
          : atOnce.storeHotp({ serial: token.serial, counter: Number(token.hotp_counter), nextCounter: verdict.nextCounter, now, ...params, ...record }),
      );
      if (Number(stored.numAffectedRows) !== 1) return onward;
      audit.written();
      // The login is accepted and audited: should the reset of the user's other tokens
      // fail now (the database gone a moment), they keep their counts, and the user
      // still gets in.
      if (othersFailed(held, token.serial)) {
        try {
          await db.executeQuery(atOnce.resetFailuresInOrder({ userPk: holderPk, now }));
        } catch (error) {
          deps.onFollowUpFailure?.("reset of the failures of the user's other tokens after an accepted login", error);
        }
      }
      return result;
    }
    return onward;
  }

  /** A token locked for a while unlocks by itself once the lock duration has passed. */
  async function unlockExpired(trx: Transaction<Database>, principal: Principal, tokens: LoginToken[], now: number): Promise<LoginToken[]> {
    const result: LoginToken[] = [];
    for (const token of tokens) {
      if (lockRunOut(token, now)) {
        const unlocked = await trx
          .updateTable("tokens")
          .set({ state: "active", failures: 0, locked_until: null, state_reason: "lock duration passed", state_changed_at: now, updated_at: now })
          .where("serial", "=", token.serial)
          .where("state", "=", "locked")
          .executeTakeFirst();
        if (Number(unlocked.numUpdatedRows) === 1) {
          await audit.append(trx, principal, [
            { action: "token.unlock", virtualServerId: token.virtual_server_id, targetType: "token", targetId: token.serial, tokenSerial: token.serial, userPk: token.user_pk, fromState: "locked", toState: "active", reason: "lock duration passed" },
          ]);
          result.push({ ...token, state: "active", locked_until: null });
          continue;
        }
      }
      result.push(token);
    }
    return result;
  }

  /** Reports each decision's result, reason and time to the metrics. */
  async function measured<R extends AuthResult | RedeemResult>(method: AuthRequest["method"], decide: () => Promise<R>): Promise<R> {
    const started = process.hrtime.bigint();
    const result = await decide();
    deps.metrics?.authentication(method, result.result, result.result === "reject" ? result.reason : undefined, Number(process.hrtime.bigint() - started) / 1e9);
    return result;
  }

  async function redeem(request: Omit<AuthRequest, "passcode"> & { challengeId: string }, waitMs: number, signal?: AbortSignal): Promise<RedeemResult> {
    if (!deps.push) throw new Error("push is not configured");
    const { application } = request;
    const vsId = application.virtual_server_id;
    const userId = request.userId.replaceAll("\0", "\\0");
    const source = request.source.replaceAll("\0", "\\0");
    // A State holding NUL is none we gave (ids are ASCII), and no user id holds one;
    // PostgreSQL text could not hold it.
    const impossible = request.challengeId.includes("\0") || request.userId.includes("\0");
    const user = impossible ? undefined : (await db.executeQuery(queries.userPk({ virtualServerId: vsId, userId }))).rows[0];
    // The user is checked before the wait: nobody waits on, or learns of, another's login.
    const outcome = user ? await deps.push.outcome(request.challengeId, waitMs, application.id, user.id, signal) : null;
    // The wait was ended (the server stops) before the phone answered: nothing is
    // decided nor recorded; asked again, another server finds the login as it stands.
    if (outcome?.status === "pending") signal?.throwIfAborted();
    return writes.run(async (trx): Promise<RedeemResult> => {
      const now = clock.nowMs();
      let result: RedeemResult;
      if (!outcome) result = { result: "reject", reason: "unknown_challenge" };
      else if (outcome.status === "approved" && now > outcome.row.expires_at + APPROVAL_GRACE_MS) result = { result: "reject", reason: "expired" };
      else if (outcome.status === "approved") {
        // Compare-and-set: of two requests with the same State, on one node or two, one
        // gets in; and only while the token that approved is active and the user's (not
        // suspended, revoked, nor returned and issued to someone else since the approval).
        const redeemed = await trx
          .updateTable("challenges")
          .set({ redeemed_at: now })
          .where("id", "=", outcome.row.id)
          .where("status", "=", "approved")
          .where("redeemed_at", "is", null)
          .where(({ exists, selectFrom, ref }) =>
            exists(selectFrom("tokens").select("tokens.serial").whereRef("tokens.serial", "=", ref("challenges.answered_serial")).whereRef("tokens.user_pk", "=", ref("challenges.user_pk")).where("tokens.state", "=", "active")),
          )
          .executeTakeFirst();
        if (Number(redeemed.numUpdatedRows) === 1) result = { result: "accept", serial: outcome.row.answered_serial ?? "", userId };
        else {
          const token = outcome.row.answered_serial ? (await trx.executeQuery(queries.approverState({ serial: outcome.row.answered_serial, userPk: outcome.row.user_pk }))).rows[0] : undefined;
          result = { result: "reject", reason: token?.state === "active" ? "redeemed" : "no_token" };
        }
      } else result = { result: "reject", reason: outcome.status === "pending" ? "no_answer" : outcome.status === "fraud" ? "denied" : outcome.status };
      const who = { userId, source, userPk: user?.id ?? null, serial: result.result === "accept" ? result.serial : null };
      await audit.append(trx, authPrincipal(application), [loginRecord(request, result, who, { push: true, challengeId: request.challengeId.replaceAll("\0", "\\0") })]);
      return result;
    });
  }

  const service = {
    /**
     * Where a push login stands, waiting up to `waitMs` for the user's answer. An approval
     * that can no longer let the user in (past its grace, or its token no longer active
     * and the user's) is a login refused: audited as `auth.reject` and counted, as the
     * trail would otherwise show only the approval. Each look that answers so is one
     * refusal; the application stops asking at the first.
     */
    async challengeOutcome(
      request: Pick<AuthRequest, "application" | "method" | "client">,
      challengeId: string,
      waitMs: number,
      /** The wait ends when this aborts: the application went away. */
      signal?: AbortSignal,
    ): Promise<{ status: "pending" | "accept" | "reject"; reason?: string; serial?: string }> {
      if (!deps.push) throw new Error("push is not configured");
      const started = process.hrtime.bigint();
      // Another application's challenge is unknown at once: it learns nothing, not even when it is answered.
      const outcome = await deps.push.outcome(challengeId, waitMs, request.application.id, undefined, signal);
      if (!outcome) return { status: "reject", reason: "unknown_challenge" };
      switch (outcome.status) {
        case "pending":
          return { status: "pending" };
        case "approved": {
          // As a redemption (see redeem): an approval is good for the challenge's life and
          // APPROVAL_GRACE_MS, while the token that gave it is active and still the user's.
          const { row } = outcome;
          let refused: "expired" | "no_token" | null = null;
          if (clock.nowMs() > row.expires_at + APPROVAL_GRACE_MS) refused = "expired";
          else {
            const token = row.answered_serial ? (await db.executeQuery(queries.approverState({ serial: row.answered_serial, userPk: row.user_pk }))).rows[0] : undefined;
            if (token?.state !== "active") refused = "no_token";
          }
          if (!refused) return { status: "accept", serial: row.answered_serial ?? undefined };
          const ended = { result: "reject", reason: refused } as const;
          await writes.run(async (trx) => {
            const user = await trx.selectFrom("users").select("user_id").where("id", "=", row.user_pk).executeTakeFirst();
            const who = { userId: user?.user_id ?? row.user_pk, source: row.source, userPk: row.user_pk, serial: null };
            await audit.append(trx, authPrincipal(request.application), [loginRecord(request, ended, who, { push: true, challengeId, approvedBy: row.answered_serial })]);
          });
          deps.metrics?.authentication(request.method, "reject", refused, Number(process.hrtime.bigint() - started) / 1e9);
          return { status: "reject", reason: refused };
        }
        default:
          return { status: "reject", reason: outcome.status === "fraud" ? "denied" : outcome.status };
      }
    },

    /**
     * A RADIUS client in challenge mode comes back with the State of our Access-Challenge:
     * the push login it names lets in the user it was opened for, at this application,
     * once. Another user name, another application, a State we never gave, or an
     * approval already used are all `unknown_challenge` or `redeemed`; each redemption
     * is audited like a login. Waits up to `waitMs` while the user has not answered;
     * `signal` ends that wait, and if the login is still open then, this throws the
     * signal's AbortError (the server stops: nothing is decided).
     */
    async redeemChallenge(request: Omit<AuthRequest, "passcode"> & { challengeId: string }, waitMs: number, signal?: AbortSignal): Promise<RedeemResult> {
      return measured(request.method, () => redeem(request, waitMs, signal));
    },

    /**
     * A request refused before any user or passcode is looked at (a RADIUS client that
     * sent CHAP, say): audited as `auth.reject` with the reason, and counted, like any
     * login that did not get in. Nothing else changes: no limit, no token.
     */
    async refuse(request: Omit<AuthRequest, "passcode">, reason: RefusedReason): Promise<void> {
      const started = process.hrtime.bigint();
      const userId = request.userId.replaceAll("\0", "\\0");
      const source = request.source.replaceAll("\0", "\\0");
      await writes.run((trx) => audit.append(trx, authPrincipal(request.application), [loginRecord(request, { result: "reject", reason }, { userId, source, userPk: null, serial: null }, { push: false })]));
      deps.metrics?.authentication(request.method, "reject", reason, Number(process.hrtime.bigint() - started) / 1e9);
    },

    async authenticate(request: AuthRequest): Promise<AuthResult> {
      return measured(request.method, () => service.decide(request));
    },

    /**
     * Push logins the user denied (or reported), in the answer's transaction: each counts
     * one failure against the source that asked for it, as a wrong passcode does, so that a stranger who sprays
     * push requests at many users from one place stops at the source's limit. Not
     * against the user (a stranger's requests would then cost the user their own
     * logins), and not an expiry (a phone out of reach is not a guess).
     */
    async countDeniedPushes(tx: LoginTransaction, denied: Array<{ virtualServerId: string; source: string }>): Promise<void> {
      // In the keys' order: on PostgreSQL two fraud reports at once, each denying logins
      // from the same sources, take their rows in one order and cannot deadlock.
      const keys = denied.map(({ virtualServerId, source }) => `${virtualServerId}:${sourceLimitKey(source)}`).sort();
      for (const key of keys) await limits.failed(tx, key);
    },

    async decide(request: AuthRequest): Promise<AuthResult> {
      const { application } = request;
      const passcode = typedPasscode(request.passcode);
      // A RADIUS attribute or a JSON string may hold NUL, which PostgreSQL text cannot:
      // what is stored and counted has it written as \0. No user id holds one.
      const impossibleUser = request.userId.includes("\0");
      const userId = impossibleUser ? request.userId.replaceAll("\0", "\\0") : request.userId;
      const source = request.source.replaceAll("\0", "\\0");
      const vsId = application.virtual_server_id;
      // Counted by its /64 when it is an IPv6 address, and within the virtual server:
      // another organisation's clients cannot spend this one's limits. Audited as it came.
      const sourceKey = `${vsId}:${sourceLimitKey(source)}`;
      // The id of a virtual server has no colon: the pair is unambiguous.
      const userKey = `${vsId}:${userId}`;
      const principal = authPrincipal(application);
      const now = clock.nowMs();
      const reject = (reason: RejectReason): AuthResult => ({ result: "reject", reason, message: messages[reason] });
      const push = typedAsksForPush(passcode);

      const record = async (trx: Transaction<Database>, result: AuthResult, userPk: string | null, serial: string | null) =>
        audit.append(trx, principal, [loginRecord(request, result, { userId, source, userPk, serial }, { push })]);
      // A refusal past the limits looks at no token, but its record goes in the user's
      // trail (GET /audit?userId=) when the user exists: the guessing shows where an
      // operator looks for it. One indexed read; the requester learns nothing from it.
      const userPkOf = async (trx: Transaction<Database>) => (impossibleUser ? null : ((await trx.executeQuery(queries.userPk({ virtualServerId: vsId, userId }))).rows[0]?.id ?? null));

      // A typed passcode takes its attempt from the user's limit before it is checked,
      // and a success gives it back: guesses sent all at once stop at the limit, on
      // SQLite (where the logins of a group commit run one after another) and on
      // PostgreSQL (where each attempt's count is one upsert, on any node). The source's
      // failures are counted once known, inside the login's transaction: on PostgreSQL a
      // burst from one source can pass its limit by at most the transactions running at
      // that moment (ten per node, the pool). A count that cannot be stored fails the
      // whole login, which then leaves nothing behind but the attempt taken.
      const refused = async (tx: LoginTransaction, result: AuthResult, userPk: string | null) => {
        await record(tx.trx, result, userPk, null);
        await limits.failed(tx, sourceKey);
        return result;
      };

      if (push && application.push_otp !== 1) {
        // Push is off at this application: said before any user is looked up, the same
        // for every user id, so the answer tells nothing of who exists.
        const result = reject("push_unavailable");
        await writes.run((trx) => record(trx, result, null, null));
        return result;
      }
      if (push) {
        // Push OTP: a challenge for the user's push-capable devices, or the advice to type
        // the passcode. The limits, the user, the challenge and the login's audit record
        // are one transaction (on SQLite within a group commit), so a burst of push
        // requests cannot learn which user ids exist past the limit, and a push login
        // costs one commit. The devices hear of the challenge once it has committed.
        const opened = await writes.run(async (trx, scope): Promise<{ result: AuthResult; challenge?: OpenedChallenge }> => {
          const tx = { trx, scope };
          const limit = await limits.check(tx, sourceKey, userKey);
          if (limit.over) {
            const result = reject("rate_limited");
            await record(trx, result, await userPkOf(trx), null);
            return { result };
          }
          // An unknown user is told what a user without push is told: the reason (for the
          // application and the audit) differs, the words an end user sees do not.
          const unknown = async (): Promise<AuthResult> => {
            const result: AuthResult = { result: "reject", reason: "user_unknown", message: messages.push_unavailable };
            await record(trx, result, null, null);
            await limits.countFailure(tx, sourceKey, userKey);
            return result;
          };
          if (impossibleUser) return { result: await unknown() };
          const rows = (await trx.executeQuery(queries.userTokens({ virtualServerId: vsId, userId }))).rows;
          if (rows.length === 0) return { result: await unknown() };
          const user = { id: rows[0]!.holder_pk };
          // A lock whose duration has passed ends at a push request as at a typed
          // passcode: the unlocked token's device is asked like any other.
          await unlockExpired(trx, principal, rows.filter((row) => row.serial !== null) as LoginToken[], now);
          const challenge = deps.push
            ? await deps.push.open(trx, { virtualServerId: vsId, applicationId: application.id, resourceName: application.resource_name, userPk: user.id, source, timeoutMs: application.push_timeout_seconds * 1000 })
            : null;
          // A user with three sign-ins waiting on the phone already: too many attempts. A
          // user who lately reported one as fraud: no push, the passcode is typed.
          const result: AuthResult =
            challenge === "busy"
              ? reject("rate_limited")
              : challenge === "blocked"
                ? reject("push_blocked")
                : challenge
                  ? { result: "pending", challengeId: challenge.id, numberToMatch: challenge.numberToMatch, expiresAt: challenge.expiresAt, message: `Approve the sign-in on your phone (number ${challenge.numberToMatch})` }
                  : reject("push_unavailable");
          await record(trx, result, user.id, null);
          return challenge && challenge !== "busy" && challenge !== "blocked" ? { result, challenge } : { result };
        });
        if (opened.challenge) deps.push?.announce(opened.challenge);
        return opened.result;
      }

      const first = impossibleUser ? null : await acceptAtOnce(request, passcode, { vsId, userId, source, sourceKey, userKey, principal });
      if (first && "result" in first) return first;
      // Passcode checks arriving together share a transaction (group commit).
      return writes.run(async (trx, scope) => {
        const tx = { trx, scope };
        const limit = await limits.take(tx, sourceKey, userKey, first?.taken);
        if (limit.over) {
          // Refused without a look at any token, but audited (on SQLite in the group
          // commit of the logins around it, so a flood of refused guesses does not cost
          // a commit each).
          const result = reject("rate_limited");
          await record(trx, result, await userPkOf(trx), null);
          return result;
        }
        if (impossibleUser) return refused(tx, reject("user_unknown"), null);
        const rows = (await trx.executeQuery(queries.userTokens({ virtualServerId: vsId, userId }))).rows;
        if (rows.length === 0) return refused(tx, reject("user_unknown"), null);
        const user = { id: rows[0]!.holder_pk };
        const held = rows.filter((row) => row.serial !== null) as LoginToken[];
        const tokens = await unlockExpired(trx, principal, held, now);
        const active = tokens.filter((token) => token.state === "active" && token.key_ciphertext !== null);
        // A user without a token that could answer fails like an unknown one: the
        // limits do not tell the two apart.
        if (active.length === 0) return refused(tx, reject(tokens.length > 0 ? "locked" : "no_token"), user.id);
        let replayed = false;
        for (const token of active) {
          const key = keyring.decrypt(token.key_ciphertext!, token.key_id!, token.serial);
          const verdict = verifyPasscode(token, key, passcode, now);
          key.fill(0);
          if (!verdict.ok) {
            if (verdict.reason === "replayed") replayed = true;
            continue;
          }
          const resets = othersFailed(active, token.serial);
          if (resets && deps.kind === "postgres") await trx.executeQuery(queries.lockForSuccess({ userPk: user.id, serial: token.serial }));
          // Compare-and-set: of two nodes checking the same passcode at once, one stores it.
          const stored = await trx.executeQuery(
            verdict.mode === "totp"
              ? queries.storeTotp({ serial: token.serial, step: verdict.step, driftSteps: verdict.driftSteps, now })
              : queries.storeHotp({ serial: token.serial, counter: Number(token.hotp_counter), nextCounter: verdict.nextCounter, now }),
          );
          if (Number(stored.numAffectedRows) !== 1) {
            replayed = true;
            continue;
          }
          const result: AuthResult = { result: "accept", serial: token.serial, userId };
          if (resets) await trx.executeQuery(queries.resetFailures({ userPk: user.id, now }));
          await record(trx, result, user.id, token.serial);
          await limits.succeeded(tx, userKey);
          return result;
        }
        // A wrong passcode counts against every active token the user holds; at the
        // policy's threshold a token locks (DESIGN section 2). The count is added in the
        // database, not written as read plus one: on PostgreSQL guesses checked at once
        // on several connections all read the same count, and each must still add its
        // own. The update waits for the token's row, so the one that reaches the
        // threshold locks it, and a check that follows finds it locked.
        const policy = (await effectivePolicy(trx, vsId)).effective;
        for (const token of active) {
          const counted = await trx
            .updateTable("tokens")
            .set((eb) => ({ failures: eb("failures", "+", 1), updated_at: now }))
            .where("serial", "=", token.serial)
            .where("state", "=", "active")
            .returning("failures")
            .executeTakeFirst();
          if (!counted || Number(counted.failures) < policy.lockThreshold) continue;
          const failures = Number(counted.failures);
          await trx
            .updateTable("tokens")
            .set({ state: "locked", locked_until: policy.lockDurationSeconds > 0 ? now + policy.lockDurationSeconds * 1000 : null, state_reason: `${failures} failed passcodes`, state_changed_at: now })
            .where("serial", "=", token.serial)
            .execute();
          await audit.append(trx, principal, [
            { action: "token.lock", virtualServerId: vsId, targetType: "token", targetId: token.serial, tokenSerial: token.serial, userPk: user.id, fromState: "active", toState: "locked", reason: `${failures} failed passcodes` },
          ]);
        }
        return refused(tx, reject(replayed ? "replayed" : "wrong"), user.id);
      });
    },
  };
  return service;
}

export type AuthService = ReturnType<typeof createAuthService>;

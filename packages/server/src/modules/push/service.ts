import { randomInt } from "node:crypto";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import { sql, type Kysely, type Transaction } from "kysely";
import { prepareInsert, prepareQuery } from "../../storage/prepared.js";
import type { ChallengeRow, Database, TokenRow } from "../../storage/schema.js";
import { writeBatcherFor, type WriteBatcher, type WriteScope } from "../../storage/write-batch.js";
import { PUSH_TIMEOUT_SECONDS } from "../applications/service.js";
import type { AuditEntry } from "../audit/service.js";
import { lockForSuccess, resetFailures } from "../auth/service.js";
import { verifyPasscode } from "../auth/verify.js";
import type { EnrollmentEngine, SignedRequest } from "../enrollment/engine.js";
import type { Metrics } from "../metrics/metrics.js";
import { systemPrincipal } from "../operators/access.js";
import type { ChallengeHub } from "./hub.js";
import type { WebPush } from "./web-push.js";

/** How long a push login waits for the user unless its application says otherwise (DESIGN section 4). */
export const CHALLENGE_TTL_MS = 60_000;

/** How long a challenge is kept after it expired; the audit trail keeps how it ended. */
export const CHALLENGE_RETENTION_MS = 24 * 3600_000;

/**
 * Open challenges one user may have. Past it a push request is refused, so that a
 * stranger who knows a user id cannot flood the phone with sign-in requests until one
 * is approved by mistake ("push bombing").
 */
export const MAX_OPEN_CHALLENGES_PER_USER = 3;

/**
 * How long after a user reported a push login as fraud (deny and report) no push is
 * sent to them: whoever knows their password and keeps asking gets nothing onto the
 * phone, and the user types passcodes meanwhile.
 */
export const FRAUD_PUSH_BLOCK_MS = 30 * 60_000;

/** Challenges a prune deletes in one statement. */
const PRUNE_BATCH = 1000;

/** The reason `auth.push_cancelled` gives, by how the push login ended (see cancel). */
const CANCELLED_BECAUSE = {
  typed: "the user typed the passcode instead",
  withdrawn: "the application withdrew the sign-in request",
  deleted: "the application was deleted",
  stopped: "the server that waited for the answer stopped; the sign-in is asked again",
} as const;

export const CHALLENGE_STATUSES = ["pending", "approved", "denied", "fraud", "expired", "cancelled"] as const;

/**
 * How long the message that a challenge ended may wait at the push service beyond the
 * challenge's own life, so that a phone that got the challenge's message late still
 * hears of its end when it comes back online.
 */
const ENDED_MESSAGE_GRACE_MS = 60_000;

/**
 * How long the node that ended a push login has to send the message that it ended
 * before any node sends it instead (`sendOwedEnds`), and how long after the end that is
 * still tried: a node restarted, or a push service that failed, within ten minutes.
 */
const OWED_END_DELAY_MS = 30_000;
const OWED_END_WINDOW_MS = 10 * 60_000;

/**
 * How long the node that opened a push login has to send its Web Push message before any
 * node sends it instead (`sendOwedWakes`): the node stopped after the commit, or the
 * push service failed. Short, as the login lives a minute by default.
 */
const OWED_WAKE_DELAY_MS = 5_000;

/** The longest a push login lives (the longest push timeout an application may have): older ones owe no wake. */
const LONGEST_CHALLENGE_MS = PUSH_TIMEOUT_SECONDS.max * 1000;

/** Owed end messages sent in one look. */
const OWED_END_BATCH = 100;

/**
 * Owed Web Push messages, a page at a time: `page(after)` reads up to OWED_END_BATCH rows
 * in (its time column, as `timeOf` reads it, and id) order after the cursor, and each page goes to `send` before
 * the next is read, until a short page; so that messages a failing push service keeps
 * owed do not hold back the ones after them. Returns how many rows it looked at.
 */
async function everyOwedPage<Row extends { id: string }>(
  page: (after: { at: number; id: string } | null) => Promise<Row[]>,
  timeOf: (row: Row) => number,
  send: (rows: Row[]) => Promise<void>,
): Promise<number> {
  let after: { at: number; id: string } | null = null;
  let looked = 0;
  for (;;) {
    const rows = await page(after);
    if (rows.length > 0) await send(rows);
    looked += rows.length;
    if (rows.length < OWED_END_BATCH) return looked;
    const last = rows[rows.length - 1]!;
    after = { at: timeOf(last), id: last.id };
  }
}

/** Expired challenges closed (and audited) in one transaction. */
const EXPIRE_BATCH = 500;

/** `cancelled`: the login ended another way before anyone answered (the passcode was typed, or the application withdrew it). */
export type ChallengeStatus = (typeof CHALLENGE_STATUSES)[number];

export interface ChallengeView {
  id: string;
  /** For a device: its tokens of the challenged user, one of which approves. */
  serials?: string[];
  resourceName: string;
  source: string;
  numberToMatch: string;
  createdAt: string;
  expiresAt: string;
  status: ChallengeStatus;
}

const CHALLENGE_COLUMNS = [
  "id", "virtual_server_id", "application_id", "user_pk", "device_ids", "resource_name", "source", "number_to_match",
  "status", "answered_serial", "created_at", "expires_at", "answered_at", "redeemed_at", "end_push_owed", "wake_push_owed", "wake_owed_devices",
] as const satisfies readonly (keyof ChallengeRow)[];

/** A challenge that ended, for the devices that showed it; `owed`: it owes its Web Push devices the message. */
type EndedChallenge = { id: string; deviceIds: string[]; outcome: ChallengeStatus; expiresAt: number; resourceName: string; owed: boolean };

/** A challenge `open` made, for `announce` once its transaction has committed. */
export type OpenedChallenge = ChallengeView & { row: ChallengeRow; devices: Array<{ device_id: string; push_subscription: string | null }> };

export function statusOf(row: Pick<ChallengeRow, "status" | "expires_at">, nowMs: number): ChallengeStatus {
  return row.status === "pending" && row.expires_at <= nowMs ? "expired" : (row.status as ChallengeStatus);
}

function view(row: ChallengeRow, nowMs: number): ChallengeView {
  return {
    id: row.id,
    resourceName: row.resource_name,
    source: row.source,
    numberToMatch: row.number_to_match,
    createdAt: new Date(row.created_at).toISOString(),
    expiresAt: new Date(row.expires_at).toISOString(),
    status: statusOf(row, nowMs),
  };
}

/**
 * The statements of every push login, compiled once: a push login runs about ten of
 * them over its four HTTP exchanges, and building each anew cost more than running it.
 */
function preparePushQueries(db: Kysely<Database>) {
  return {
    pushDevicesOfUser: prepareQuery<{ userPk: string }, { device_id: string | null; push_subscription: string | null }>(db, (db, param) =>
      db
        .selectFrom("tokens")
        .innerJoin("devices", "devices.token_serial", "tokens.serial")
        .select(["devices.device_id", "devices.push_subscription"])
        .where("tokens.user_pk", "=", param("userPk"))
        .where("tokens.state", "=", "active")
        .where("devices.app", "=", "tessera")
        .where("devices.push_now", "=", "enabled")
        .where("devices.device_id", "is not", null),
    ),
    challenge: prepareQuery<{ id: string }, ChallengeRow>(db, (db, param) => db.selectFrom("challenges").selectAll().where("id", "=", param("id"))),
    /** The user's open challenges, and the fraud reports since `reportedSince`: one look on the (user_pk, status, expires_at) index. */
    openOfUser: prepareQuery<{ userPk: string; now: number; reportedSince: number }, { open: number; reported: number }>(db, (db, param) =>
      db
        .selectFrom("challenges")
        .select([
          sql<number>`count(case when status = 'pending' and expires_at > ${param("now")} then 1 end)`.as("open"),
          sql<number>`count(case when status = 'fraud' and answered_at > ${param("reportedSince")} then 1 end)`.as("reported"),
        ])
        .where("user_pk", "=", param("userPk"))
        .where("status", "in", ["pending", "fraud"]),
    ),
    insertChallenge: prepareInsert<"challenges", ChallengeRow>(db, "challenges", CHALLENGE_COLUMNS),
    /**
     * The open challenges of the users whose tokens the device holds, oldest first: found
     * by user on the (user_pk, status, expires_at) index, so that a device's look costs
     * the same however many logins of other users wait at that moment.
     */
    openForDevice: prepareQuery<{ now: number; deviceId: string }, ChallengeRow>(db, (db, param) =>
      db
        .selectFrom("challenges")
        .selectAll()
        .where("user_pk", "in", (eb) =>
          eb.selectFrom("tokens").innerJoin("devices", "devices.token_serial", "tokens.serial").select("tokens.user_pk").where("devices.device_id", "=", param("deviceId")).where("tokens.user_pk", "is not", null).$narrowType<{ user_pk: string }>(),
        )
        .where("status", "=", "pending")
        .where("expires_at", ">", param("now"))
        .orderBy("created_at"),
    ),
    activeTokensOnDevice: prepareQuery<{ deviceId: string }, { serial: string; user_pk: string | null }>(db, (db, param) =>
      db.selectFrom("tokens").innerJoin("devices", "devices.token_serial", "tokens.serial").select(["tokens.serial", "tokens.user_pk"]).where("devices.device_id", "=", param("deviceId")).where("tokens.state", "=", "active"),
    ),
    deviceKey: prepareQuery<{ deviceId: string }, { signing_public_key: string | null }>(db, (db, param) =>
      db.selectFrom("devices").select("signing_public_key").where("device_id", "=", param("deviceId")).where("signing_public_key", "is not", null),
    ),
    approvingToken: prepareQuery<{ serial: string; userPk: string; deviceId: string }, TokenRow>(db, (db, param) =>
      db
        .selectFrom("tokens")
        .innerJoin("devices", "devices.token_serial", "tokens.serial")
        .selectAll("tokens")
        .where("tokens.serial", "=", param("serial"))
        .where("tokens.user_pk", "=", param("userPk"))
        .where("tokens.state", "=", "active")
        .where("devices.device_id", "=", param("deviceId")),
    ),
    storeApprovalStep: prepareQuery<{ serial: string; step: number; driftSteps: number; now: number }, never>(db, (db, param) =>
      db
        .updateTable("tokens")
        .set({ last_totp_step: param("step"), drift_steps: param("driftSteps"), failures: 0, updated_at: param("now") })
        .where("serial", "=", param("serial"))
        // Locked or suspended since it was read: no approval.
        .where("state", "=", "active")
        .where((eb) => eb.or([eb("last_totp_step", "is", null), eb("last_totp_step", "<=", param("step"))])),
    ),
    resetFailures: prepareQuery<{ userPk: string; now: number }, never>(db, resetFailures),
    lockForSuccess: prepareQuery<{ userPk: string; serial: string }, { serial: string }>(db, lockForSuccess),
    closeChallenge: prepareQuery<{ id: string; status: string; now: number; serial: string | null }, never>(db, (db, param) =>
      db
        .updateTable("challenges")
        .set({ status: param("status"), answered_at: param("now"), answered_serial: param("serial") })
        .where("id", "=", param("id"))
        .where("status", "=", "pending")
        .where("expires_at", ">", param("now")),
    ),
  };
}

/**
 * Push OTP (DESIGN section 4): a challenge goes to the user's tessera devices whose
 * Push OTP is on; the device answers, signed with its device key, and an approval
 * carries the current passcode (autosend), which must pass the same checks as a typed
 * one, replay included.
 */
export function createPushService(
  deps: Pick<CoreDeps, "db" | "kind" | "clock" | "audit" | "keyring"> & {
    hub: ChallengeHub;
    verifySigned: EnrollmentEngine["verifySigned"];
    /** Wakes devices whose app is not running; without it only the live connection and the poll deliver. */
    webPush?: WebPush;
    metrics?: Metrics;
    /** The group commit the answers join (the one the logins use); without it, one of their own. */
    writes?: WriteBatcher;
    /** Told of Web Push messages that did not go out (for the log). */
    onWebPushFailure?: (deviceId: string, detail: string) => void;
    /**
     * Counts, in the answer's transaction, the push logins the user denied or reported
     * (the fraud report denies the user's other waiting ones too): "not me" answers,
     * which the guessing limits count against the source that asked (a stranger spraying
     * push requests). Should it throw, the answer fails whole, as a login whose count
     * cannot be stored does.
     */
    countDenied?: (tx: { trx: Transaction<Database>; scope: WriteScope }, denied: Array<{ virtualServerId: string; source: string }>) => Promise<void>;
  },
) {
  const { db, clock, audit, keyring, hub } = deps;
  const queries = preparePushQueries(db);
  const writes = deps.writes ?? writeBatcherFor(deps.kind, db);
  const readChallenge = async (id: string) => (await db.executeQuery(queries.challenge({ id }))).rows[0];
  /** The device's open challenges, oldest first (its users' open ones; the challenge's list of devices decides). */
  const openChallengesFor = async (deviceId: string, now: number) =>
    (await db.executeQuery(queries.openForDevice({ now, deviceId }))).rows.filter((row) => (JSON.parse(row.device_ids) as string[]).includes(deviceId));
  /** Challenges as the device sees them, each with its tokens of the challenged user that may approve. */
  const forDevice = async (deviceId: string, rows: ChallengeRow[], now: number): Promise<ChallengeView[]> => {
    if (rows.length === 0) return [];
    const tokens = (await db.executeQuery(queries.activeTokensOnDevice({ deviceId }))).rows;
    return rows.map((row) => ({ ...view(row, now), serials: tokens.filter((token) => token.user_pk === row.user_pk).map((token) => token.serial) }));
  };

  /**
   * Posts one message to the push services of the devices that have a subscription.
   * Returns the devices whose push service did not take it (failed): none when every
   * one took it or has no more use for it (gone, or not allowed). A login does not wait
   * for it: the push service's round trip (often hundreds of milliseconds) is the
   * device's business. Never rejects.
   */
  async function sendWebPush(targets: Array<{ device_id: string | null; push_subscription: string | null }>, payload: Record<string, unknown>, ttlSeconds: number): Promise<string[]> {
    const subscribed = targets.filter((device) => device.device_id && device.push_subscription).map((device) => ({ deviceId: device.device_id!, subscription: device.push_subscription! }));
    if (!deps.webPush) return subscribed.map((device) => device.deviceId);
    if (subscribed.length === 0) return [];
    try {
      const results = await deps.webPush.send(subscribed, payload, ttlSeconds);
      for (const result of results) {
        deps.metrics?.webPush(result.outcome);
        if (result.outcome !== "sent") deps.onWebPushFailure?.(result.deviceId, result.detail ?? result.outcome);
      }
      return results.filter((result) => result.outcome === "failed").map((result) => result.deviceId);
    } catch (error) {
      deps.metrics?.webPush("failed");
      deps.onWebPushFailure?.("*", (error as Error).message);
      return subscribed.map((device) => device.deviceId);
    }
  }

  /**
   * The message a device's service worker turns into a notification: what the app would
   * show. Once every push service took it, the login owes it no more (`wake_push_owed`);
   * otherwise `sendOwedWakes` sends it again while the login is open, to the devices
   * whose push service did not take it (`wake_owed_devices` once some did), so that a
   * phone that has it does not ring again for another's failing push service. Never
   * rejects.
   */
  async function wake(devices: Array<{ device_id: string | null; push_subscription: string | null }>, challenge: Pick<ChallengeRow, "id" | "resource_name" | "source" | "number_to_match" | "expires_at">): Promise<void> {
    const payload = {
      type: "challenge",
      id: challenge.id,
      resourceName: challenge.resource_name,
      source: challenge.source,
      numberToMatch: challenge.number_to_match,
      expiresAt: new Date(challenge.expires_at).toISOString(),
    };
    const failed = await sendWebPush(devices, payload, (challenge.expires_at - clock.nowMs()) / 1000);
    // None of them took it: owed as before.
    if (failed.length > 0 && failed.length === devices.filter((device) => device.push_subscription).length) return;
    try {
      await db
        .updateTable("challenges")
        .set(failed.length === 0 ? { wake_push_owed: 0, wake_owed_devices: null } : { wake_owed_devices: JSON.stringify(failed) })
        .where("id", "=", challenge.id)
        .where("wake_push_owed", "=", 1)
        .execute();
    } catch (error) {
      deps.onWebPushFailure?.("*", (error as Error).message);
    }
  }

  /**
   * Challenges have ended (answered, expired, cancelled): the devices that showed them
   * hear so over their live connections, and those with a Web Push subscription through
   * their push service, so that a notification shown while the app was closed leaves
   * the tray. The message may outlive the challenge by ENDED_MESSAGE_GRACE_MS: a device
   * that was offline may get the challenge's message late and this one after it. Sent
   * after the commit; a challenge that owes it (`end_push_owed`) is marked told once
   * every push service took it. A process that dies before, or a push service that
   * fails, leaves the mark, and `sendOwedEnds` sends it later. One look at the devices
   * for all of them. Resolves when done; never rejects.
   */
  async function tellEnded(challenges: EndedChallenge[], live = true): Promise<void> {
    const deviceIds = [...new Set(challenges.flatMap((challenge) => challenge.deviceIds))];
    if (live && deviceIds.length > 0) hub.deviceHasWork(deviceIds);
    if (!deps.webPush) return;
    try {
      const devices =
        deviceIds.length === 0
          ? []
          : await db.selectFrom("devices").select(["device_id", "push_subscription"]).where("device_id", "in", deviceIds).where("push_subscription", "is not", null).execute();
      const now = clock.nowMs();
      const told = await Promise.all(
        challenges.map(async (challenge) => {
          const payload = { type: "ended", id: challenge.id, outcome: challenge.outcome, resourceName: challenge.resourceName };
          const ttlSeconds = (Math.max(0, challenge.expiresAt - now) + ENDED_MESSAGE_GRACE_MS) / 1000;
          const failed = await sendWebPush(
            devices.filter((device) => challenge.deviceIds.includes(device.device_id!)),
            payload,
            ttlSeconds,
          );
          return failed.length === 0 && challenge.owed ? challenge.id : null;
        }),
      );
      const done = told.filter((id): id is string => id !== null);
      if (done.length > 0) await db.updateTable("challenges").set({ end_push_owed: 0 }).where("id", "in", done).where("end_push_owed", "=", 1).execute();
    } catch (error) {
      deps.onWebPushFailure?.("*", (error as Error).message);
    }
  }

  async function deviceKey(deviceId: string): Promise<string> {
    const row = (await db.executeQuery(queries.deviceKey({ deviceId }))).rows[0];
    if (!row) throw fail("DEVICE_NOT_FOUND", { deviceId });
    return row.signing_public_key!;
  }

  const service = {
    /**
     * Opens a challenge for the user's push-capable devices inside the login's own
     * transaction (so that the login's checks, the challenge and its audit record take
     * one commit); null when they have none, "busy" when the user has
     * MAX_OPEN_CHALLENGES_PER_USER open already, "blocked" when the user reported a push
     * login as fraud within FRAUD_PUSH_BLOCK_MS. Nothing leaves the transaction: once it
     * has committed, `announce` tells the devices.
     */
    async open(
      trx: Transaction<Database>,
      input: { virtualServerId: string; applicationId: string; resourceName: string; userPk: string; source: string; timeoutMs?: number },
    ): Promise<OpenedChallenge | "busy" | "blocked" | null> {
      // Counted and opened in one transaction: on SQLite, with its one writer, requests
      // that arrive together stop exactly at the limit. On PostgreSQL they would all count
      // before any inserts, on connections and nodes of their own: the user's row is
      // locked first, so they count one after another. FOR NO KEY UPDATE: it orders them
      // as well, and leaves alone statements that only refer to the user (a token
      // provisioned to them takes a key-share lock on the row, which FOR UPDATE would block).
      if (deps.kind === "postgres") await trx.selectFrom("users").select("id").where("id", "=", input.userPk).forNoKeyUpdate().execute();
      const rows = (await trx.executeQuery(queries.pushDevicesOfUser({ userPk: input.userPk }))).rows;
      // One device may hold several of the user's tokens: it is asked once.
      const byDevice = new Map<string, { device_id: string; push_subscription: string | null }>();
      for (const row of rows) {
        const known = byDevice.get(row.device_id!);
        if (!known || (!known.push_subscription && row.push_subscription)) byDevice.set(row.device_id!, { device_id: row.device_id!, push_subscription: row.push_subscription });
      }
      const devices = [...byDevice.values()];
      if (devices.length === 0) return null;
      const now = clock.nowMs();
      const open = (await trx.executeQuery(queries.openOfUser({ userPk: input.userPk, now, reportedSince: now - FRAUD_PUSH_BLOCK_MS }))).rows[0];
      if (Number(open?.reported ?? 0) > 0) return "blocked";
      if (Number(open?.open ?? 0) >= MAX_OPEN_CHALLENGES_PER_USER) return "busy";
      const row: ChallengeRow = {
        id: newId("chl"),
        virtual_server_id: input.virtualServerId,
        application_id: input.applicationId,
        user_pk: input.userPk,
        device_ids: JSON.stringify(devices.map((d) => d.device_id)),
        resource_name: input.resourceName,
        source: input.source,
        number_to_match: String(randomInt(10, 100)),
        status: "pending",
        answered_serial: null,
        created_at: now,
        expires_at: now + (input.timeoutMs ?? CHALLENGE_TTL_MS),
        answered_at: null,
        redeemed_at: null,
        end_push_owed: devices.some((device) => device.push_subscription) ? 1 : 0,
        wake_push_owed: devices.some((device) => device.push_subscription) ? 1 : 0,
        wake_owed_devices: null,
      };
      await trx.executeQuery(queries.insertChallenge(row));
      return { ...view(row, now), row, devices };
    },

    /** After the transaction that opened it committed: the devices hear of the challenge (live connection, signed poll, Web Push). */
    announce(opened: OpenedChallenge): void {
      hub.deviceHasWork(opened.devices.map((d) => d.device_id));
      // Without a subscription among its devices the login owes no message: nothing to send, nothing to mark.
      if (opened.row.wake_push_owed === 1) void wake(opened.devices, opened.row);
    },

    /**
     * The challenge's state, waiting up to `waitMs` for it to leave "pending"; null, at
     * once, when there is no such challenge, another application opened it, or (when
     * `userPk` is given) it is another user's.
     */
    async outcome(challengeId: string, waitMs: number, applicationId: string, userPk?: string, signal?: AbortSignal): Promise<{ row: ChallengeRow; status: ChallengeStatus } | null> {
      // One read a look: the first look is the answer when nothing need wait, and a
      // look that times out leaves the state as it was at the deadline.
      let last: { row: ChallengeRow; status: ChallengeStatus } | null = null;
      const look = async () => {
        const row = await readChallenge(challengeId);
        if (!row || row.application_id !== applicationId || (userPk !== undefined && row.user_pk !== userPk)) return "none" as const;
        last = { row, status: statusOf(row, clock.nowMs()) };
        return last.status !== "pending" ? last : null;
      };
      let settled = await hub.waitUntil(`challenge:${challengeId}`, Math.max(0, waitMs), look, undefined, signal);
      // Ended before its first look (the server stops, the client went): one look all the
      // same, so that "pending" is not taken for a challenge that does not exist.
      if (settled === null && last === null) settled = await look();
      return settled === "none" ? null : (settled ?? last);
    },

    /** The app's signed poll: pending challenges for this device, waiting up to `waitMs` for one. */
    async pendingForDevice(deviceId: string, signed: SignedRequest, waitMs: number, signal?: AbortSignal): Promise<ChallengeView[]> {
      if (signed.deviceId !== deviceId) throw fail("SIGNATURE_INVALID", { problem: "signed for another device" });
      await deps.verifySigned(signed, await deviceKey(deviceId));
      await db.updateTable("devices").set({ last_seen_at: clock.nowMs() }).where("device_id", "=", deviceId).execute();
      const pending = async () => {
        const now = clock.nowMs();
        const views = await forDevice(deviceId, await openChallengesFor(deviceId, now), now);
        return views.length > 0 ? views : null;
      };
      return (await hub.waitUntil(`device:${deviceId}`, waitMs, pending, undefined, signal)) ?? [];
    },

    /**
     * The live connection: the device's pending challenges now, and each new one as it
     * comes, through `send`, until `closed` resolves. Also re-reads the database every
     * few seconds for challenges opened on nodes whose notification did not arrive.
     */
    async authorizeLive(deviceId: string, signed: SignedRequest): Promise<void> {
      if (signed.deviceId !== deviceId) throw fail("SIGNATURE_INVALID", { problem: "signed for another device" });
      await deps.verifySigned(signed, await deviceKey(deviceId));
      await db.updateTable("devices").set({ last_seen_at: clock.nowMs(), live_capable: 1 }).where("device_id", "=", deviceId).execute();
    },

    /**
     * After authorizeLive: streams the device's challenges through `send` until `closed`
     * resolves, each new one as it opens and, once one it was sent is no longer open
     * (answered here or on another device, expired, cancelled), its end, so that the app
     * stops offering it.
     */
    async live(deviceId: string, send: { challenge(challenge: ChallengeView): void; ended(id: string): void }, closed: Promise<void>): Promise<void> {
      // The open challenges already sent: those that closed are dropped at each look, so
      // a connection kept for days holds no more than the challenges open at once.
      let sent = new Set<string>();
      const deliver = async () => {
        const now = clock.nowMs();
        const open = await openChallengesFor(deviceId, now);
        const openIds = new Set(open.map((row) => row.id));
        const fresh = open.filter((row) => !sent.has(row.id));
        const ended = [...sent].filter((id) => !openIds.has(id));
        sent = openIds;
        for (const id of ended) send.ended(id);
        for (const challenge of await forDevice(deviceId, fresh, now)) send.challenge(challenge);
      };
      let queue = deliver();
      const wake = () => {
        queue = queue.then(deliver).catch(() => undefined);
      };
      const unsubscribe = hub.onDeviceWork(deviceId, wake);
      const timer = setInterval(wake, 3_000);
      try {
        await closed;
      } finally {
        clearInterval(timer);
        unsubscribe();
        await queue.catch(() => undefined);
      }
    },

    /**
     * Closes the challenges nobody answered in time, each with its audit record
     * (`auth.push_expired`), so that the trail tells how every push login ended, and
     * tells the devices that showed them (each node, every few seconds). Returns how
     * many it closed.
     */
    async closeExpired(): Promise<number> {
      const now = clock.nowMs();
      // Most looks find none: then no transaction (on SQLite, no turn at the write lock).
      const any = await db.selectFrom("challenges").select("id").where("status", "=", "pending").where("expires_at", "<=", now).limit(1).executeTakeFirst();
      if (!any) return 0;
      let closed = 0;
      for (;;) {
        const { looked, ended } = await db.transaction().execute(async (trx) => {
          const rows = await trx
            .selectFrom("challenges")
            .innerJoin("users", "users.id", "challenges.user_pk")
            .select(["challenges.id", "challenges.virtual_server_id", "challenges.application_id", "challenges.user_pk", "users.user_id", "challenges.source", "challenges.resource_name", "challenges.expires_at", "challenges.device_ids", "challenges.end_push_owed"])
            .where("challenges.status", "=", "pending")
            .where("challenges.expires_at", "<=", now)
            .orderBy("challenges.expires_at")
            .orderBy("challenges.id")
            .limit(EXPIRE_BATCH)
            // Every node looks every few seconds: on PostgreSQL each takes the rows no
            // other node holds, instead of waiting for them (or, in another order, on
            // each other).
            .$if(deps.kind === "postgres", (query) => query.forUpdate("challenges").skipLocked())
            .execute();
          const ended = [];
          for (const row of rows) {
            // Answered on another node meanwhile: that answer stands.
            const result = await trx.updateTable("challenges").set({ status: "expired", answered_at: now }).where("id", "=", row.id).where("status", "=", "pending").executeTakeFirst();
            if (Number(result.numUpdatedRows) === 1) ended.push(row);
          }
          if (ended.length > 0) {
            await audit.append(
              trx,
              systemPrincipal,
              ended.map((row) => ({
                action: "auth.push_expired",
                virtualServerId: row.virtual_server_id,
                targetType: "user",
                targetId: row.user_id,
                userPk: row.user_pk,
                reason: "nobody answered the sign-in request in time",
                details: { challengeId: row.id, applicationId: row.application_id, resourceName: row.resource_name, source: row.source, result: "reject", expiresAt: new Date(row.expires_at).toISOString() },
              })),
            );
          }
          return { looked: rows.length, ended };
        });
        if (ended.length > 0) deps.metrics?.pushEnded("expired", ended.length);
        void tellEnded(ended.map((row) => ({ id: row.id, deviceIds: JSON.parse(row.device_ids) as string[], outcome: "expired", expiresAt: row.expires_at, resourceName: row.resource_name, owed: row.end_push_owed === 1 })));
        closed += ended.length;
        if (looked < EXPIRE_BATCH) return closed;
      }
    },

    /**
     * Deletes challenges that expired more than a day ago, answered or not (each node,
     * once a minute): nobody asks after them any more, and a table that kept every
     * push login would only grow. Returns how many went.
     */
    async pruneEnded(): Promise<number> {
      const cutoff = clock.nowMs() - CHALLENGE_RETENTION_MS;
      let pruned = 0;
      for (;;) {
        // The status list lets both databases range over the (status, expires_at) index.
        const result = await db
          .deleteFrom("challenges")
          .where("id", "in", (eb) => eb.selectFrom("challenges").select("id").where("status", "in", CHALLENGE_STATUSES).where("expires_at", "<", cutoff).limit(PRUNE_BATCH))
          .executeTakeFirst();
        const deleted = Number(result.numDeletedRows);
        pruned += deleted;
        if (deleted < PRUNE_BATCH) return pruned;
      }
    },

    /**
     * Sends the Web Push messages of open push logins that their nodes did not send: the
     * node stopped after the commit, or a push service failed (each node, every few
     * seconds). Only logins at least OWED_WAKE_DELAY_MS old, so that the node that opened
     * one has had its turn; a device that got it already shows the same notification
     * again in its place (it is tagged with the login). A page of OWED_END_BATCH at a
     * time, oldest first, until none is left. Returns how many it looked at.
     */
    async sendOwedWakes(): Promise<number> {
      if (!deps.webPush) return 0;
      const now = clock.nowMs();
      return everyOwedPage(
        (after) =>
          db
            .selectFrom("challenges")
            .select(["id", "device_ids", "wake_owed_devices", "resource_name", "source", "number_to_match", "expires_at", "created_at"])
            // Written out, so that both databases take the partial index.
            .where("wake_push_owed", "=", sql.lit(1))
            .where("created_at", "<=", now - OWED_WAKE_DELAY_MS)
            .where("created_at", ">", now - LONGEST_CHALLENGE_MS)
            .where("status", "=", "pending")
            .where("expires_at", ">", now)
            .$if(after !== null, (query) => query.where((eb) => eb.or([eb("created_at", ">", after!.at), eb.and([eb("created_at", "=", after!.at), eb("id", ">", after!.id)])])))
            .orderBy("created_at")
            .orderBy("id")
            .limit(OWED_END_BATCH)
            .execute(),
        (row) => row.created_at,
        async (rows) => {
          // Each login's devices still owed: those whose push service did not take it, or all.
          const owed = rows.map((row) => JSON.parse(row.wake_owed_devices ?? row.device_ids) as string[]);
          const devices = await db.selectFrom("devices").select(["device_id", "push_subscription"]).where("device_id", "in", [...new Set(owed.flat())]).where("push_subscription", "is not", null).execute();
          await Promise.all(rows.map((row, i) => wake(devices.filter((device) => owed[i]!.includes(device.device_id!)), row)));
        },
      );
    },

    /**
     * Sends the messages that push logins ended which their nodes did not send: the
     * node stopped after the commit, or a push service failed (each node, every 30 s).
     * Only ends at least OWED_END_DELAY_MS old, so that the node that ended it has had
     * its turn, and at most OWED_END_WINDOW_MS, a page of OWED_END_BATCH at a time in
     * the order they ended until none is left, so that ends a failing push service keeps
     * owed do not hold back the ones after them. Each goes to every device the login
     * went to, the one that answered included, which its app ignores; should two nodes
     * look at once, a device gets it twice, which ends nothing twice. Returns how many
     * it looked at.
     */
    async sendOwedEnds(): Promise<number> {
      if (!deps.webPush) return 0;
      const now = clock.nowMs();
      return everyOwedPage(
        (after) =>
          db
            .selectFrom("challenges")
            .select(["id", "device_ids", "status", "expires_at", "resource_name", "answered_at"])
            // Written out, so that both databases take the partial index.
            .where("end_push_owed", "=", sql.lit(1))
            .where("answered_at", "<=", now - OWED_END_DELAY_MS)
            .where("answered_at", ">", now - OWED_END_WINDOW_MS)
            .$if(after !== null, (query) => query.where((eb) => eb.or([eb("answered_at", ">", after!.at), eb.and([eb("answered_at", "=", after!.at), eb("id", ">", after!.id)])])))
            .orderBy("answered_at")
            .orderBy("id")
            .limit(OWED_END_BATCH)
            .execute(),
        (row) => Number(row.answered_at),
        (rows) =>
          tellEnded(
            rows.map((row) => ({ id: row.id, deviceIds: JSON.parse(row.device_ids) as string[], outcome: statusOf(row, now), expiresAt: row.expires_at, resourceName: row.resource_name, owed: true })),
            false,
          ),
      );
    },

    /**
     * Ends a push login that ended another way before anyone answered on the phone: the
     * user typed the passcode in answer to the RADIUS Access-Challenge (`typed`), or the
     * application withdrew it (`withdrawn`: the user chose to type the passcode, or left
     * the login page), its application was deleted (`deleted`), or the server whose RADIUS
     * request waited for it in hold mode stopped (`stopped`: the NAS's next try opens
     * another). The phone can no longer approve it (the app says it is no longer
     * waiting, at once over the live connection) and the trail says how it ended
     * (`auth.push_cancelled`). Only a challenge this application opened (and, for a typed
     * passcode, for the user who typed it); `not_found` otherwise, `closed` when it has
     * ended already.
     */
    async cancel(
      challengeId: string,
      application: { id: string; virtualServerId: string },
      why: { by: "typed"; userId: string } | { by: "withdrawn" } | { by: "deleted" } | { by: "stopped" },
    ): Promise<"cancelled" | "not_found" | "closed"> {
      const now = clock.nowMs();
      const closed = await db.transaction().execute(async (trx) => {
        let query = trx
          .selectFrom("challenges")
          .innerJoin("users", "users.id", "challenges.user_pk")
          .select(["challenges.id", "challenges.virtual_server_id", "challenges.user_pk", "users.user_id", "challenges.resource_name", "challenges.source", "challenges.device_ids", "challenges.expires_at", "challenges.end_push_owed"])
          .where("challenges.id", "=", challengeId)
          .where("challenges.application_id", "=", application.id)
          .where("users.virtual_server_id", "=", application.virtualServerId);
        if (why.by === "typed") query = query.where("users.user_id", "=", why.userId);
        const row = await query.executeTakeFirst();
        if (!row) return "not_found" as const;
        const updated = await trx.executeQuery(queries.closeChallenge({ id: challengeId, status: "cancelled", now, serial: null }));
        if (Number(updated.numAffectedRows) !== 1) {
          // Approved already, and not used yet: a typed passcode ends the push login all
          // the same, so the approval can no longer let a request with the State in.
          if (why.by === "typed") await trx.updateTable("challenges").set({ redeemed_at: now }).where("id", "=", challengeId).where("status", "=", "approved").where("redeemed_at", "is", null).execute();
          return "closed" as const;
        }
        await audit.append(trx, systemPrincipal, [
          {
            action: "auth.push_cancelled",
            virtualServerId: row.virtual_server_id,
            targetType: "user",
            targetId: row.user_id,
            userPk: row.user_pk,
            reason: CANCELLED_BECAUSE[why.by],
            details: { challengeId, applicationId: application.id, resourceName: row.resource_name, source: row.source, result: "reject" },
          },
        ]);
        return { deviceIds: JSON.parse(row.device_ids) as string[], expiresAt: row.expires_at, resourceName: row.resource_name, owed: row.end_push_owed === 1 };
      });
      if (typeof closed === "string") return closed;
      deps.metrics?.pushEnded("cancelled");
      hub.challengeChanged(challengeId);
      // The phones showing it hear that it ended.
      void tellEnded([{ id: challengeId, deviceIds: closed.deviceIds, outcome: "cancelled", expiresAt: closed.expiresAt, resourceName: closed.resourceName, owed: closed.owed }]);
      return "cancelled";
    },

    /**
     * Ends the open push logins whose application is gone: opened by a node that had not
     * yet heard of the deletion, after the deletion looked for them. Each node's expiry
     * sweep calls it; open logins are few, and their index is the one the sweep reads.
     */
    async closeOrphaned(): Promise<number> {
      const rows = await db
        .selectFrom("challenges")
        .select(["challenges.id", "challenges.application_id", "challenges.virtual_server_id"])
        .where("challenges.status", "=", "pending")
        .where("challenges.expires_at", ">", clock.nowMs())
        .where(({ not, exists, selectFrom }) => not(exists(selectFrom("applications").select("applications.id").whereRef("applications.id", "=", "challenges.application_id"))))
        .limit(EXPIRE_BATCH)
        .execute();
      let closed = 0;
      for (const row of rows) {
        if ((await service.cancel(row.id, { id: row.application_id, virtualServerId: row.virtual_server_id }, { by: "deleted" })) === "cancelled") closed++;
      }
      return closed;
    },

    /** The ids of an application's push logins still open (to end them when it is deleted). */
    async openOfApplication(applicationId: string): Promise<string[]> {
      const rows = await db.selectFrom("challenges").select("id").where("application_id", "=", applicationId).where("status", "=", "pending").execute();
      return rows.map((row) => row.id);
    },

    /** The device's answer: approve (with the current passcode), deny, or deny and report fraud. */
    async answer(challengeId: string, signed: SignedRequest, input: { decision: "approve" | "deny" | "fraud"; serial?: string; otp?: string }): Promise<{ status: ChallengeStatus }> {
      const row = await readChallenge(challengeId);
      const deviceIds = row ? (JSON.parse(row.device_ids) as string[]) : [];
      if (!row || !deviceIds.includes(signed.deviceId)) throw fail("CHALLENGE_NOT_FOUND", { id: challengeId });
      await deps.verifySigned(signed, await deviceKey(signed.deviceId));
      const now = clock.nowMs();
      if (statusOf(row, now) !== "pending") throw fail("CHALLENGE_CLOSED", { id: challengeId, status: statusOf(row, now) });
      const status: ChallengeStatus = input.decision === "approve" ? "approved" : input.decision === "deny" ? "denied" : "fraud";
      // Answers arriving together share a commit with each other and with the logins
      // around them (on SQLite, the group commit). An answer refused before it wrote
      // anything returns its refusal instead of throwing, so that it does not roll back
      // the answers and logins it shares the transaction with.
      type Closed = Pick<ChallengeRow, "id" | "device_ids" | "expires_at" | "resource_name" | "source" | "application_id" | "end_push_owed">;
      const result = await writes.run(async (trx, scope): Promise<{ status: ChallengeStatus; alsoClosed: Closed[] } | { refused: ReturnType<typeof fail> }> => {
        // A report and a push request for the same user on two nodes (PostgreSQL) take
        // the user's row in turn, as `open` does: the request either counts the report
        // and is refused, or committed first and its challenge is closed below.
        if (status === "fraud" && deps.kind === "postgres") await trx.selectFrom("users").select("id").where("id", "=", row.user_pk).forNoKeyUpdate().execute();
        let serial: string | null = null;
        let approval: { serial: string; step: number; driftSteps: number } | null = null;
        if (status === "approved") {
          // Autosend passcode: the approval proves the device holds the key now.
          const token = (await trx.executeQuery(queries.approvingToken({ serial: input.serial ?? "", userPk: row.user_pk, deviceId: signed.deviceId }))).rows[0];
          if (!token || !token.key_ciphertext) return { refused: fail("CHALLENGE_ANSWER_INVALID", { problem: "no active token of this user on this device" }) };
          const key = keyring.decrypt(token.key_ciphertext, token.key_id!, token.serial);
          // Replay rules for an approval: the passcode may be of the last accepted step,
          // never of an earlier one. The same step is allowed because the approval is
          // signed by the device over this challenge's id, which closes with it: what
          // could be replayed is the passcode, and it no longer opens anything typed.
          const last = token.last_totp_step === null ? null : Number(token.last_totp_step) - 1;
          const verdict = verifyPasscode({ ...token, last_totp_step: last }, key, input.otp ?? "", now);
          key.fill(0);
          if (!verdict.ok || verdict.mode !== "totp") return { refused: fail("CHALLENGE_ANSWER_INVALID", { problem: verdict.ok ? "not a TOTP token" : `passcode ${verdict.reason}` }) };
          approval = { serial: token.serial, step: verdict.step, driftSteps: verdict.driftSteps };
          serial = token.serial;
        } else {
          // A denial or a report names the token of the user on the device that gave it,
          // so that it shows in that token's trail (and the operator sees whose phone said no).
          serial = (await trx.executeQuery(queries.activeTokensOnDevice({ deviceId: signed.deviceId }))).rows.find((token) => token.user_pk === row.user_pk)?.serial ?? null;
        }
        // Closed meanwhile (answered on another device, withdrawn): nothing written yet,
        // so the refusal is returned. Two devices answering at once is common enough.
        const closed = await trx.executeQuery(queries.closeChallenge({ id: challengeId, status, now, serial }));
        if (Number(closed.numAffectedRows) !== 1) return { refused: fail("CHALLENGE_CLOSED", { id: challengeId, status: "answered" }) };
        if (approval) {
          // On PostgreSQL the rows this writes are taken first, in serial order, as a wrong
          // passcode at the same user takes them (see lockForSuccess); and they tell
          // whether any other token has failures to reset.
          const held = deps.kind === "postgres" ? (await trx.executeQuery(queries.lockForSuccess({ userPk: row.user_pk, serial: approval.serial }))).rows : null;
          // The step, after the close: should it be refused (a replay by another login
          // meanwhile), this throws and the close rolls back with it.
          const stored = await trx.executeQuery(queries.storeApprovalStep({ ...approval, now }));
          if (Number(stored.numAffectedRows) !== 1) throw fail("CHALLENGE_ANSWER_INVALID", { problem: "passcode replayed, or the token is no longer active" });
          // A success, as a typed passcode's: the user's other tokens start counting afresh.
          if (!held || held.some((token) => token.serial !== approval.serial)) await trx.executeQuery(queries.resetFailures({ userPk: row.user_pk, now }));
        }
        // A report says "this is not me": the user's other push logins still waiting came
        // from the same moment, likely the same stranger, and are denied with it, so that
        // none is left on the phone to be approved by mistake.
        const alsoClosed: Closed[] =
          status === "fraud"
            ? await trx
                .updateTable("challenges")
                .set({ status: "denied", answered_at: now })
                .where("user_pk", "=", row.user_pk)
                .where("status", "=", "pending")
                .where("expires_at", ">", now)
                .where("id", "!=", challengeId)
                .returning(["id", "device_ids", "expires_at", "resource_name", "source", "application_id", "end_push_owed"])
                .execute()
            : [];
        if (status !== "approved") await deps.countDenied?.({ trx, scope }, [row, ...alsoClosed].map((closed) => ({ virtualServerId: row.virtual_server_id, source: closed.source })));
        const device = { kind: "system", operatorId: null, actor: `device:${signed.deviceId}`, role: "admin", scope: { virtualServerId: null, path: "/", includesChildren: true } } as const;
        // No active token of the user on the device any more (suspended since the login
        // opened, say): the answer goes in the user's trail.
        const target = serial
          ? ({ targetType: "token", targetId: serial } as const)
          : ({ targetType: "user", targetId: (await trx.selectFrom("users").select("user_id").where("id", "=", row.user_pk).executeTakeFirst())?.user_id ?? row.user_pk } as const);
        const record = (closed: Pick<ChallengeRow, "id" | "application_id" | "resource_name" | "source">, action: string, reason: string | null): AuditEntry => ({
          action,
          virtualServerId: row.virtual_server_id,
          ...target,
          tokenSerial: serial,
          userPk: row.user_pk,
          reason,
          details: { challengeId: closed.id, applicationId: closed.application_id, resourceName: closed.resource_name, source: closed.source, result: status === "approved" ? "accept" : "reject" },
        });
        await audit.append(trx, device, [
          record(row, status === "fraud" ? "auth.fraud_reported" : `auth.push_${status}`, status === "fraud" ? "the user denied the login and reported it as fraud" : status === "denied" ? "the user denied the login" : null),
          ...alsoClosed.map((closed) => record(closed, "auth.push_denied", "denied with the user's fraud report on another push login")),
        ]);
        return { status, alsoClosed };
      });
      if ("refused" in result) throw result.refused;
      deps.metrics?.pushEnded(status);
      hub.challengeChanged(challengeId);
      if (result.alsoClosed.length > 0) deps.metrics?.pushEnded("denied", result.alsoClosed.length);
      for (const closed of result.alsoClosed) hub.challengeChanged(closed.id);
      // The user's other devices showing it hear that it was answered (the one that
      // answered knows; it hears of the end at its connection's next look); every device
      // showing one the report denied with it hears of that one.
      void tellEnded([
        { id: challengeId, deviceIds: deviceIds.filter((deviceId) => deviceId !== signed.deviceId), outcome: status, expiresAt: row.expires_at, resourceName: row.resource_name, owed: row.end_push_owed === 1 },
        ...result.alsoClosed.map((closed) => ({ id: closed.id, deviceIds: JSON.parse(closed.device_ids) as string[], outcome: "denied" as const, expiresAt: closed.expires_at, resourceName: closed.resource_name, owed: closed.end_push_owed === 1 })),
      ]);
      return { status: result.status };
    },
  };
  return service;
}

export type PushService = ReturnType<typeof createPushService>;

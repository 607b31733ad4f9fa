import type { Kysely } from "kysely";
import { sealingContext } from "../../crypto/keyring.js";
import { hashSecret, sameHash } from "../../crypto/secrets.js";
import type { CoreDeps } from "../../deps.js";
import { fail, invalid } from "../../errors.js";
import { newId, newSecret, pooledRandomBytes } from "../../ids.js";
import { prepareQuery } from "../../storage/prepared.js";
import type { ApplicationRow, Database } from "../../storage/schema.js";
import { canSee, type Principal } from "../operators/access.js";
import { addressProblem } from "./addresses.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";

export interface Application {
  id: string;
  virtualServerId: string;
  name: string;
  kind: "radius" | "rest";
  resourceName: string;
  pushOtp: boolean;
  /** RADIUS push: hold the request until the user answers, or answer Access-Challenge. */
  pushMode: "hold" | "challenge";
  /** How long a push login here waits for the user's answer, in seconds. */
  pushTimeoutSeconds: number;
  radiusAddresses: string[] | null;
  createdAt: string;
  updatedAt: string;
}

export interface ApplicationInput {
  virtualServerId: string;
  name: string;
  kind: "radius" | "rest";
  resourceName?: string;
  pushOtp?: boolean;
  pushMode?: "hold" | "challenge";
  pushTimeoutSeconds?: number;
  radiusAddresses?: string[];
  /** A RADIUS shared secret to use; without one Tessera makes one and shows it once. */
  radiusSecret?: string;
}

export interface ApplicationUpdate {
  name?: string;
  resourceName?: string;
  pushOtp?: boolean;
  pushMode?: "hold" | "challenge";
  pushTimeoutSeconds?: number;
  radiusAddresses?: string[];
  radiusSecret?: string;
  /** Replace a REST application's API key: the old one stops working at once. */
  rotateApiKey?: boolean;
}

const API_KEY_PREFIX = "tak_";

/**
 * A push login waits this long for the user by default (DESIGN section 4), and at least
 * and at most these: time to take the phone out, and no longer than anyone waits at a
 * login screen. The challenge ends then, so the phone never offers a login whose NAS
 * has given up; set it below the NAS's own timeout (its retries included).
 */
export const PUSH_TIMEOUT_SECONDS = { default: 60, min: 10, max: 300 } as const;

/**
 * The rules the API's schemas state, held here as well for every other caller (the CLI):
 * an application that reached the database with a bad address or a short secret would
 * answer every VPN login wrongly.
 */
function checkInput(input: ApplicationUpdate): void {
  const problems: string[] = [];
  for (const [field, value] of [["name", input.name], ["resourceName", input.resourceName]] as const) {
    if (value !== undefined && (value.trim().length === 0 || value.length > 128)) problems.push(`${field}: 1 to 128 characters`);
    // The resource name is shown on phones and in push notifications; neither holds NUL or line breaks.
    else if (value !== undefined && /\p{Cc}/u.test(value)) problems.push(`${field}: no control characters`);
  }
  const seconds = input.pushTimeoutSeconds;
  if (seconds !== undefined && (!Number.isInteger(seconds) || seconds < PUSH_TIMEOUT_SECONDS.min || seconds > PUSH_TIMEOUT_SECONDS.max)) {
    problems.push(`pushTimeoutSeconds: a whole number of seconds from ${PUSH_TIMEOUT_SECONDS.min} to ${PUSH_TIMEOUT_SECONDS.max}`);
  }
  if (input.radiusAddresses !== undefined) {
    if (input.radiusAddresses.length === 0 || input.radiusAddresses.length > 256) problems.push("radiusAddresses: 1 to 256 addresses or ranges");
    for (const entry of input.radiusAddresses) if (addressProblem(entry) !== null) problems.push(`radiusAddresses: ${entry} is not an IPv4 or IPv6 address or CIDR range`);
  }
  if (input.radiusSecret !== undefined && (input.radiusSecret.length < 16 || input.radiusSecret.length > 128)) problems.push("radiusSecret: 16 to 128 characters");
  if (problems.length > 0) throw invalid(problems);
}

/**
 * Fields that belong to the other kind of application are refused, not ignored: a REST
 * application has no addresses, shared secret or RADIUS push mode, a RADIUS application
 * no API key to rotate. Checked before anything is written.
 */
function checkFieldsOfKind(kind: string, input: ApplicationUpdate): void {
  const foreign =
    kind === "radius"
      ? (["rotateApiKey"] as const).filter((field) => input[field] !== undefined && input[field] !== false)
      : (["radiusAddresses", "radiusSecret", "pushMode"] as const).filter((field) => input[field] !== undefined);
  if (foreign.length === 0) return;
  throw invalid(foreign.map((field) => `${field}: not for a ${kind === "radius" ? "RADIUS" : "REST"} application`));
}

/** Two creations or renames to one name at the same moment: the unique index refuses the second (PostgreSQL 23505, SQLite SQLITE_CONSTRAINT_UNIQUE). */
function nameTakenMeanwhile(error: unknown, name: string): never {
  const { code } = error as { code?: string };
  if (code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE") throw fail("APPLICATION_NAME_TAKEN", { name });
  throw error;
}

/**
 * How long a REST application found by its API key is kept before it is read again.
 * Every change made through Tessera clears the kept ones at once, on every node (see
 * `forgetApiKeys`); this only bounds how long a change that reached the database some
 * other way, or a lost notification, goes unseen: the same ten seconds as the RADIUS
 * client table.
 */
const API_KEY_CACHE_MS = 10_000;
const API_KEY_CACHE_ENTRIES = 10_000;

function toApplication(row: ApplicationRow): Application {
  return {
    id: row.id,
    virtualServerId: row.virtual_server_id,
    name: row.name,
    kind: row.kind as Application["kind"],
    resourceName: row.resource_name,
    pushOtp: row.push_otp === 1,
    pushMode: row.push_mode as Application["pushMode"],
    pushTimeoutSeconds: row.push_timeout_seconds,
    radiusAddresses: row.radius_addresses === null ? null : (JSON.parse(row.radius_addresses) as string[]),
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

/** A RADIUS shared secret people can paste into a VPN's configuration: 32 characters, about 190 bits. */
function newRadiusSecret(): string {
  return pooledRandomBytes(24).toString("base64url");
}

/** Applications ("auth nodes"): RADIUS clients by address and shared secret, REST clients by API key. */
export function createApplicationService(
  deps: Pick<CoreDeps, "db" | "clock" | "audit" | "keyring"> & {
    /** Tells every node (this one included) that the applications changed; without it, only this node's kept API keys are cleared. */
    announceChange?: () => void;
    /** Ends the push logins a deleted application left open: nobody can read their outcome any more. */
    closeChallengesOf?: (application: { id: string; virtualServerId: string }) => Promise<void>;
  },
) {
  const { db, clock, audit, keyring } = deps;
  // Every REST login starts here: compiled once.
  const byApiKeyId = prepareQuery<{ keyId: string }, ApplicationRow>(db, (db, param) => db.selectFrom("applications").selectAll().where("api_key_id", "=", param("keyId")));
  // REST applications by API key id, so that a login does not read its application
  // again. The secret is still checked against the kept hash on every request.
  const apiKeys = new Map<string, { row: ApplicationRow; until: number }>();
  // Bumped by every clearing: a read that started before one must not keep its row.
  let apiKeyGeneration = 0;
  const forgetApiKeys = () => {
    apiKeyGeneration += 1;
    apiKeys.clear();
  };
  const changed = () => {
    forgetApiKeys();
    deps.announceChange?.();
  };

  async function findVisible(trx: Kysely<Database>, principal: Principal, id: string): Promise<ApplicationRow> {
    const row = await trx
      .selectFrom("applications")
      .innerJoin("virtual_servers", "virtual_servers.id", "applications.virtual_server_id")
      .selectAll("applications")
      .select("virtual_servers.path as vs_path")
      .where("applications.id", "=", id)
      .executeTakeFirst();
    if (!row || !canSee(principal, { path: row.vs_path })) throw fail("APPLICATION_NOT_FOUND", { id });
    const { vs_path: _path, ...application } = row;
    return application;
  }

  async function nameFree(trx: Kysely<Database>, virtualServerId: string, name: string, except?: string) {
    let query = trx.selectFrom("applications").select("id").where("virtual_server_id", "=", virtualServerId).where("name", "=", name);
    if (except) query = query.where("id", "!=", except);
    if (await query.executeTakeFirst()) throw fail("APPLICATION_NAME_TAKEN", { name });
  }

  function sealRadiusSecret(id: string, secret: string) {
    const sealed = keyring.encrypt(Buffer.from(secret, "utf8"), sealingContext.radiusSecret(id));
    return { radius_secret_ciphertext: sealed.ciphertext, radius_secret_key_id: sealed.keyId };
  }

  return {
    /** Creates an application; a made-up RADIUS secret or a REST API key is in the answer, once. */
    async create(principal: Principal, input: ApplicationInput): Promise<Application & { radiusSecret?: string; apiKey?: string }> {
      checkInput(input);
      checkFieldsOfKind(input.kind, input);
      const created = await db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, input.virtualServerId, "applications.manage");
        await nameFree(trx, input.virtualServerId, input.name);
        const id = newId("app");
        const now = clock.nowMs();
        const shown: { radiusSecret?: string; apiKey?: string } = {};
        let radius = {};
        let rest = {};
        if (input.kind === "radius") {
          const secret = input.radiusSecret ?? newRadiusSecret();
          if (!input.radiusSecret) shown.radiusSecret = secret;
          radius = { radius_addresses: JSON.stringify(input.radiusAddresses ?? []), ...sealRadiusSecret(id, secret) };
        } else {
          const keyId = newId("akey");
          const secret = newSecret();
          shown.apiKey = `${API_KEY_PREFIX}${keyId}.${secret}`;
          rest = { api_key_id: keyId, api_key_hash: hashSecret(secret) };
        }
        const row: ApplicationRow = {
          id,
          virtual_server_id: input.virtualServerId,
          name: input.name,
          kind: input.kind,
          resource_name: input.resourceName ?? input.name,
          push_otp: input.pushOtp ? 1 : 0,
          push_mode: input.pushMode ?? "hold",
          push_timeout_seconds: input.pushTimeoutSeconds ?? PUSH_TIMEOUT_SECONDS.default,
          radius_addresses: null,
          radius_secret_ciphertext: null,
          radius_secret_key_id: null,
          api_key_id: null,
          api_key_hash: null,
          created_at: now,
          updated_at: now,
          ...radius,
          ...rest,
        };
        await trx
          .insertInto("applications")
          .values(row)
          .execute()
          .catch((error: unknown) => nameTakenMeanwhile(error, row.name));
        await audit.append(trx, principal, [
          { action: "application.create", virtualServerId: row.virtual_server_id, targetType: "virtual_server", targetId: id, details: { name: row.name, kind: row.kind, pushOtp: row.push_otp === 1 } },
        ]);
        return { ...toApplication(row), ...shown };
      });
      changed();
      return created;
    },

    async list(principal: Principal, virtualServerId: string): Promise<Application[]> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "applications.read");
      const rows = await db.selectFrom("applications").selectAll().where("virtual_server_id", "=", virtualServerId).orderBy("name").execute();
      return rows.map(toApplication);
    },

    async update(principal: Principal, id: string, input: ApplicationUpdate): Promise<Application & { apiKey?: string }> {
      checkInput(input);
      const updated = await db.transaction().execute(async (trx) => {
        const row = await findVisible(trx, principal, id);
        await findVisibleVirtualServer(trx, principal, row.virtual_server_id, "applications.manage");
        checkFieldsOfKind(row.kind, input);
        if (input.name !== undefined) await nameFree(trx, row.virtual_server_id, input.name, id);
        const shown: { apiKey?: string } = {};
        const changes: Partial<ApplicationRow> = { updated_at: clock.nowMs() };
        if (input.name !== undefined) changes.name = input.name;
        if (input.resourceName !== undefined) changes.resource_name = input.resourceName;
        if (input.pushOtp !== undefined) changes.push_otp = input.pushOtp ? 1 : 0;
        if (input.pushMode !== undefined) changes.push_mode = input.pushMode;
        if (input.pushTimeoutSeconds !== undefined) changes.push_timeout_seconds = input.pushTimeoutSeconds;
        if (row.kind === "radius") {
          if (input.radiusAddresses !== undefined) changes.radius_addresses = JSON.stringify(input.radiusAddresses);
          if (input.radiusSecret !== undefined) Object.assign(changes, sealRadiusSecret(id, input.radiusSecret));
        } else if (input.rotateApiKey) {
          const keyId = newId("akey");
          const secret = newSecret();
          shown.apiKey = `${API_KEY_PREFIX}${keyId}.${secret}`;
          Object.assign(changes, { api_key_id: keyId, api_key_hash: hashSecret(secret) });
        }
        await trx
          .updateTable("applications")
          .set(changes)
          .where("id", "=", id)
          .execute()
          .catch((error: unknown) => nameTakenMeanwhile(error, input.name ?? row.name));
        await audit.append(trx, principal, [
          {
            action: "application.update",
            virtualServerId: row.virtual_server_id,
            targetType: "virtual_server",
            targetId: id,
            details: {
              changed: Object.entries(input).flatMap(([key, value]) => (value === undefined || (value === false && key === "rotateApiKey") || key === "radiusSecret" ? [] : [key])),
              radiusSecretChanged: input.radiusSecret !== undefined,
            },
          },
        ]);
        return { ...toApplication({ ...row, ...changes }), ...shown };
      });
      // A rotated key stops working at once, on every node.
      changed();
      return updated;
    },

    async delete(principal: Principal, id: string): Promise<void> {
      const deleted = await db.transaction().execute(async (trx) => {
        const row = await findVisible(trx, principal, id);
        await findVisibleVirtualServer(trx, principal, row.virtual_server_id, "applications.manage");
        await trx.deleteFrom("applications").where("id", "=", id).execute();
        await audit.append(trx, principal, [{ action: "application.delete", virtualServerId: row.virtual_server_id, targetType: "virtual_server", targetId: id, details: { name: row.name } }]);
        return row;
      });
      changed();
      // Its key no longer works, so nobody would read how its open push logins end: they
      // end now, and the phones stop offering them (each audited auth.push_cancelled).
      await deps.closeChallengesOf?.({ id, virtualServerId: deleted.virtual_server_id });
    },

    /** Drops the kept API keys: another node changed the applications. */
    forgetApiKeys,

    /** The REST application a bearer API key belongs to, or null. */
    async authenticateApiKey(bearer: string): Promise<ApplicationRow | null> {
      const match = /^tak_([a-z]+_[0-9a-z]+)\.([A-Za-z0-9_-]{43})$/.exec(bearer);
      if (!match) return null;
      const keyId = match[1]!;
      const now = clock.nowMs();
      let kept = apiKeys.get(keyId);
      if (!kept || kept.until <= now) {
        const generation = apiKeyGeneration;
        const row = (await db.executeQuery(byApiKeyId({ keyId }))).rows[0];
        if (!row?.api_key_hash) {
          apiKeys.delete(keyId);
          return null;
        }
        kept = { row, until: now + API_KEY_CACHE_MS };
        // Only keys that exist are kept, so guessed ids cannot fill the map.
        if (generation === apiKeyGeneration) {
          if (apiKeys.size >= API_KEY_CACHE_ENTRIES) apiKeys.delete(apiKeys.keys().next().value!);
          apiKeys.set(keyId, kept);
        }
      }
      return sameHash(hashSecret(match[2]!), kept.row.api_key_hash!) ? kept.row : null;
    },

    /** A RADIUS client's shared secret, for checking and signing its packets. */
    radiusSecretOf(row: ApplicationRow): Buffer {
      return keyring.decrypt(row.radius_secret_ciphertext!, row.radius_secret_key_id!, sealingContext.radiusSecret(row.id));
    },
  };
}

export type ApplicationService = ReturnType<typeof createApplicationService>;

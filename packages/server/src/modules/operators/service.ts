import { hash as argon2Hash, verify as argon2Verify } from "@node-rs/argon2";
import { hashSecret, sameHash } from "../../crypto/secrets.js";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId, newSecret } from "../../ids.js";
import type { Transaction } from "kysely";
import type { Database, OperatorRow } from "../../storage/schema.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { canSee, requirePermission, type Principal, type Role } from "./access.js";
import { loginLimitsFor } from "./login-limits.js";

export interface Operator {
  id: string;
  email: string;
  name: string;
  role: Role;
  virtualServerId: string;
  scopeIncludesChildren: boolean;
  disabled: boolean;
  createdAt: string;
}

function toOperator(row: OperatorRow): Operator {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    role: row.role as Role,
    virtualServerId: row.virtual_server_id,
    scopeIncludesChildren: row.scope_children === 1,
    disabled: row.disabled === 1,
    createdAt: new Date(row.created_at).toISOString(),
  };
}

const API_KEY_PREFIX = "tsk_";
const EMAIL_ATTEMPTS = 10;
const ADDRESS_ATTEMPTS = 50;
const LIMIT_WINDOW_SECONDS = 15 * 60;

function loginPrincipal(email: string, operatorId: string | null = null): Principal {
  return { kind: "operator", operatorId, actor: `operator:${email}`, role: "auditor", scope: { virtualServerId: null, path: "/", includesChildren: false } };
}
const SESSION_PREFIX = "tss_";

export function createOperatorService(deps: Pick<CoreDeps, "db" | "kind" | "clock" | "audit"> & { sessionTtlSeconds: number }) {
  const { db, clock, audit } = deps;
  // In memory on SQLite (one server), in the database on PostgreSQL (shared by every node).
  const loginLimits = loginLimitsFor(deps.kind, db, clock, { emailAttempts: EMAIL_ATTEMPTS, addressAttempts: ADDRESS_ATTEMPTS, windowSeconds: LIMIT_WINDOW_SECONDS });

  async function findVisibleOperator(trx: Transaction<Database>, principal: Principal, operatorId: string): Promise<OperatorRow> {
    const row = await trx
      .selectFrom("operators")
      .innerJoin("virtual_servers", "virtual_servers.id", "operators.virtual_server_id")
      .selectAll("operators")
      .select("virtual_servers.path as vs_path")
      .where("operators.id", "=", operatorId)
      .executeTakeFirst();
    if (!row || !canSee(principal, { path: row.vs_path })) throw fail("OPERATOR_NOT_FOUND", { id: operatorId });
    const { vs_path: _path, ...operator } = row;
    return operator;
  }

  async function principalFor(operatorId: string): Promise<Principal | null> {
    const row = await db
      .selectFrom("operators")
      .innerJoin("virtual_servers", "virtual_servers.id", "operators.virtual_server_id")
      .select(["operators.id", "operators.email", "operators.role", "operators.disabled", "operators.scope_children"])
      .select(["virtual_servers.id as vs_id", "virtual_servers.path as vs_path"])
      .where("operators.id", "=", operatorId)
      .executeTakeFirst();
    if (!row || row.disabled === 1) return null;
    return {
      kind: "operator",
      operatorId: row.id,
      actor: `operator:${row.email}`,
      role: row.role as Role,
      scope: { virtualServerId: row.vs_id, path: row.vs_path, includesChildren: row.scope_children === 1 },
    };
  }

  return {
    async create(
      principal: Principal,
      input: { email: string; name: string; role: Role; virtualServerId: string; scopeIncludesChildren?: boolean; password?: string },
    ): Promise<Operator> {
      const passwordHash = input.password ? await argon2Hash(input.password) : null;
      return db.transaction().execute(async (trx) => {
        const home = await findVisibleVirtualServer(trx, principal, input.virtualServerId, "operators.manage");
        // The new operator's scope must sit inside the creator's: a child scope is
        // inside only when the creator's scope already includes children.
        const includesChildren = input.scopeIncludesChildren ?? false;
        if (includesChildren && !principal.scope.includesChildren) throw fail("SCOPE_ESCALATION");
        const email = input.email.trim().toLowerCase();
        const taken = await trx.selectFrom("operators").select("id").where("email", "=", email).executeTakeFirst();
        if (taken) throw fail("OPERATOR_EMAIL_TAKEN", { email });
        const now = clock.nowMs();
        const row: OperatorRow = {
          id: newId("op"),
          email,
          name: input.name,
          password_hash: passwordHash,
          role: input.role,
          virtual_server_id: home.id,
          scope_children: includesChildren ? 1 : 0,
          disabled: 0,
          created_at: now,
          updated_at: now,
        };
        await trx.insertInto("operators").values(row).execute();
        await audit.append(trx, principal, [
          {
            action: "operator.create",
            virtualServerId: home.id,
            targetType: "operator",
            targetId: row.id,
            details: { email, role: row.role, scopeIncludesChildren: includesChildren },
          },
        ]);
        return toOperator(row);
      });
    },

    async list(principal: Principal, virtualServerId: string): Promise<Operator[]> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "operators.read");
      const rows = await db
        .selectFrom("operators")
        .selectAll()
        .where("virtual_server_id", "=", virtualServerId)
        .orderBy("email")
        .execute();
      return rows.map(toOperator);
    },

    /** Changes an operator: name and password for oneself; role and disabling by an admin, never for oneself. */
    async update(
      principal: Principal,
      operatorId: string,
      input: { name?: string; role?: Role; disabled?: boolean; password?: string },
    ): Promise<Operator> {
      const passwordHash = input.password ? await argon2Hash(input.password) : undefined;
      return db.transaction().execute(async (trx) => {
        const target = await findVisibleOperator(trx, principal, operatorId);
        const self = principal.operatorId === operatorId;
        if (!self || input.role !== undefined || input.disabled !== undefined) requirePermission(principal, "operators.manage");
        if (self && ((input.role !== undefined && input.role !== target.role) || input.disabled === true)) throw fail("OPERATOR_SELF_CHANGE");
        const next = {
          name: input.name ?? target.name,
          role: input.role ?? target.role,
          disabled: input.disabled === undefined ? target.disabled : input.disabled ? 1 : 0,
          password_hash: passwordHash ?? target.password_hash,
          updated_at: clock.nowMs(),
        };
        await trx.updateTable("operators").set(next).where("id", "=", operatorId).execute();
        // A disabled operator's sessions end now; a new password ends the old sessions too.
        if (next.disabled === 1 || passwordHash) await trx.deleteFrom("sessions").where("operator_id", "=", operatorId).execute();
        await audit.append(trx, principal, [
          {
            action: "operator.update",
            virtualServerId: target.virtual_server_id,
            targetType: "operator",
            targetId: operatorId,
            details: {
              changed: Object.keys(input).filter((field) => field !== "password"),
              passwordChanged: passwordHash !== undefined,
              before: { role: target.role, disabled: target.disabled === 1 },
              after: { role: next.role, disabled: next.disabled === 1 },
            },
          },
        ]);
        return toOperator({ ...target, ...next });
      });
    },

    /** Issues an API key for an operator; the key is returned once and stored hashed. */
    async createApiKey(principal: Principal, operatorId: string, name: string): Promise<{ id: string; apiKey: string }> {
      return db.transaction().execute(async (trx) => {
        const target = await findVisibleOperator(trx, principal, operatorId);
        // Anyone may make keys for themselves; keys for others are an admin's job.
        if (principal.operatorId !== operatorId) requirePermission(principal, "operators.manage");
        const id = newId("key");
        const secret = newSecret();
        await trx
          .insertInto("api_keys")
          .values({
            id,
            operator_id: operatorId,
            name,
            secret_hash: hashSecret(secret),
            created_at: clock.nowMs(),
            last_used_at: null,
            revoked_at: null,
          })
          .execute();
        await audit.append(trx, principal, [
          { action: "api_key.create", virtualServerId: target.virtual_server_id, targetType: "api_key", targetId: id, details: { operatorId, name } },
        ]);
        return { id, apiKey: `${API_KEY_PREFIX}${id}.${secret}` };
      });
    },

    async listApiKeys(principal: Principal, operatorId: string) {
      await db.transaction().execute(async (trx) => {
        await findVisibleOperator(trx, principal, operatorId);
        if (principal.operatorId !== operatorId) requirePermission(principal, "operators.read");
      });
      const rows = await db.selectFrom("api_keys").selectAll().where("operator_id", "=", operatorId).orderBy("created_at").execute();
      const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
      return rows.map((row) => ({ id: row.id, name: row.name, createdAt: iso(row.created_at)!, lastUsedAt: iso(row.last_used_at), revokedAt: iso(row.revoked_at) }));
    },

    /** Revokes an API key at once: the next request with it is unauthenticated. */
    async revokeApiKey(principal: Principal, operatorId: string, keyId: string): Promise<void> {
      await db.transaction().execute(async (trx) => {
        const target = await findVisibleOperator(trx, principal, operatorId);
        if (principal.operatorId !== operatorId) requirePermission(principal, "operators.manage");
        const revoked = await trx
          .updateTable("api_keys")
          .set({ revoked_at: clock.nowMs() })
          .where("id", "=", keyId)
          .where("operator_id", "=", operatorId)
          .where("revoked_at", "is", null)
          .executeTakeFirst();
        if (Number(revoked.numUpdatedRows) !== 1) throw fail("API_KEY_NOT_FOUND", { id: keyId });
        await audit.append(trx, principal, [
          { action: "api_key.revoke", virtualServerId: target.virtual_server_id, targetType: "api_key", targetId: keyId, details: { operatorId } },
        ]);
      });
    },

    /** Logout: the session token stops working. */
    async endSession(bearer: string): Promise<void> {
      const match = /^tss_([a-z]+_[0-9a-z]+)\./.exec(bearer);
      if (match) await db.deleteFrom("sessions").where("id", "=", match[1]!).execute();
    },

    /**
     * Password login: a session token for the console and API, expiring after the session
     * TTL. Attempts are counted per email and per source address before the password is
     * checked (an attempt in progress counts until it succeeds); past the limit the login
     * is refused without a check.
     */
    async createSession(email: string, password: string, sourceAddress = "unknown"): Promise<{ token: string; expiresAt: string }> {
      const normalised = email.trim().toLowerCase();
      const attempt = await loginLimits.take(normalised, sourceAddress);
      if (!attempt.ok) {
        const retryAfterSeconds = Math.ceil(attempt.retryAfterMs / 1000);
        throw fail("RATE_LIMITED", { retryAfterSeconds }, { retryAfterSeconds });
      }

      const row = await db.selectFrom("operators").selectAll().where("email", "=", normalised).executeTakeFirst();
      // Verify against a fixed hash when the operator is unknown, so timing does not
      // tell which emails exist.
      const storedHash = row?.password_hash ?? (await dummyHash());
      const good = await argon2Verify(storedHash, password).catch(() => false);
      if (!row || !good || row.disabled === 1) {
        if (row) {
          await db.transaction().execute((trx) =>
            audit.append(trx, loginPrincipal(row.email), [
              { action: "operator.login_failed", virtualServerId: row.virtual_server_id, targetType: "operator", targetId: row.id, details: { sourceAddress } },
            ]),
          );
        }
        throw fail("INVALID_CREDENTIALS");
      }
      await loginLimits.succeeded(normalised, sourceAddress);
      const id = newId("ses");
      const secret = newSecret();
      const now = clock.nowMs();
      const expiresAt = now + deps.sessionTtlSeconds * 1000;
      await db.transaction().execute(async (trx) => {
        await trx
          .insertInto("sessions")
          .values({ id, operator_id: row.id, secret_hash: hashSecret(secret), created_at: now, expires_at: expiresAt })
          .execute();
        await audit.append(trx, loginPrincipal(row.email, row.id), [
          { action: "operator.login", virtualServerId: row.virtual_server_id, targetType: "operator", targetId: row.id, details: { sourceAddress } },
        ]);
      });
      return { token: `${SESSION_PREFIX}${id}.${secret}`, expiresAt: new Date(expiresAt).toISOString() };
    },

    /** Turns a bearer credential into a principal, or null when it is not valid now. */
    async authenticate(bearer: string): Promise<Principal | null> {
      const match = /^(tsk_|tss_)([a-z]+_[0-9a-z]+)\.([A-Za-z0-9_-]{43})$/.exec(bearer);
      if (!match) return null;
      const [, prefix, id, secret] = match as unknown as [string, string, string, string];
      if (prefix === API_KEY_PREFIX) {
        const key = await db.selectFrom("api_keys").selectAll().where("id", "=", id).executeTakeFirst();
        if (!key || key.revoked_at !== null || !sameHash(key.secret_hash, hashSecret(secret))) return null;
        // When a key was last used tells operators which keys are dead; a minute's
        // precision spares a write on every request.
        const now = clock.nowMs();
        if (key.last_used_at === null || now - key.last_used_at > 60_000) {
          await db.updateTable("api_keys").set({ last_used_at: now }).where("id", "=", id).execute();
        }
        return principalFor(key.operator_id);
      }
      const session = await db.selectFrom("sessions").selectAll().where("id", "=", id).executeTakeFirst();
      if (!session || session.expires_at <= clock.nowMs() || !sameHash(session.secret_hash, hashSecret(secret))) return null;
      return principalFor(session.operator_id);
    },
  };
}

let dummy: Promise<string> | undefined;
function dummyHash(): Promise<string> {
  dummy ??= argon2Hash(newSecret());
  return dummy;
}

export type OperatorService = ReturnType<typeof createOperatorService>;

import type { Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database, TokenRow, TokenUpdate } from "../../storage/schema.js";
import { canSee, requirePermission, type Permission, type Principal } from "../operators/access.js";
import { planAction, type TokenAction, type TokenState } from "./lifecycle.js";
import type { ImportedSeed } from "./seed-files/seed.js";
import { selectTokenViews, toToken, type Token } from "./token.js";
import { tokenTypes, type TokenType } from "./types.js";

/** Loads a token the principal may see; a token in another tenant is "not found". */
export async function findVisibleToken(trx: Transaction<Database>, principal: Principal, serial: string): Promise<TokenRow> {
  const row = await trx
    .selectFrom("tokens")
    .innerJoin("virtual_servers", "virtual_servers.id", "tokens.virtual_server_id")
    .selectAll("tokens")
    .select("virtual_servers.path as vs_path")
    .where("tokens.serial", "=", serial)
    .executeTakeFirst();
  if (!row || !canSee(principal, { path: row.vs_path })) throw fail("TOKEN_NOT_FOUND", { serial });
  const { vs_path: _path, ...token } = row;
  return token;
}

export interface TransitionOptions {
  reason?: string | null;
  /** Extra column changes that come with the move (key destroyed, counters reset...). */
  changes?: (token: TokenRow) => TokenUpdate;
  /** Runs after the token row changed, in the same transaction (device records...). */
  after?: (trx: Transaction<Database>, token: TokenRow) => Promise<void>;
  details?: Record<string, unknown>;
}

/** What revoking leaves of a token: no user, no device, no secrets the user held. */
export function revokedChanges(token: Pick<TokenRow, "type">, to: "inventory" | "lost"): TokenUpdate {
  // A hardware token's seed belongs to the device: it stays when the token goes back to
  // the shelf (with its HOTP counter, which the device keeps too), and is destroyed
  // when the device is lost or faulty. Issued keys are always destroyed.
  const keepKey = to === "inventory" && tokenTypes[token.type as TokenType].keyOrigin === "imported";
  return {
    user_pk: null,
    provisioning_task_id: null,
    failures: 0,
    locked_until: null,
    last_totp_step: null,
    drift_steps: 0,
    ...(keepKey ? {} : { key_ciphertext: null, key_id: null, hotp_counter: 0 }),
  };
}

export function createTokenLifecycle(deps: Pick<CoreDeps, "db" | "clock" | "audit" | "keyring">) {
  const { db, clock, audit, keyring } = deps;

  async function view(trx: Transaction<Database>, serial: string): Promise<Token> {
    return toToken(await selectTokenViews(trx).where("tokens.serial", "=", serial).executeTakeFirstOrThrow());
  }

  /**
   * Moves one token by one lifecycle action in one transaction: scope, role, the
   * action's allowed states, a compare-and-set on the state (a concurrent move loses
   * cleanly), and the audit record.
   */
  async function transition(
    principal: Principal,
    serial: string,
    action: TokenAction,
    permission: Permission,
    options: TransitionOptions = {},
  ): Promise<Token | null> {
    return db.transaction().execute(async (trx) => {
      const token = await findVisibleToken(trx, principal, serial);
      requirePermission(principal, permission);
      const from = token.state as TokenState;
      const plan = planAction(action, from);
      if (!plan.ok) {
        throw fail("TOKEN_STATE_CONFLICT", { serial, state: from, action, allowed: plan.allowed.join(" or ") });
      }
      const now = clock.nowMs();
      if (plan.to === null) {
        await trx.deleteFrom("devices").where("token_serial", "=", serial).execute();
        const deleted = await trx.deleteFrom("tokens").where("serial", "=", serial).where("state", "=", from).executeTakeFirst();
        if (Number(deleted.numDeletedRows) !== 1) throw fail("TOKEN_STATE_CONFLICT", { serial, state: "changing", action, allowed: from });
      } else {
        const updated = await trx
          .updateTable("tokens")
          .set({
            ...options.changes?.(token),
            state: plan.to,
            state_reason: options.reason ?? null,
            state_changed_at: now,
            updated_at: now,
          })
          .where("serial", "=", serial)
          .where("state", "=", from)
          .executeTakeFirst();
        if (Number(updated.numUpdatedRows) !== 1) throw fail("TOKEN_STATE_CONFLICT", { serial, state: "changing", action, allowed: from });
      }
      await options.after?.(trx, token);
      await audit.append(trx, principal, [
        {
          action: `token.${action}`,
          virtualServerId: token.virtual_server_id,
          targetType: "token",
          targetId: serial,
          tokenSerial: serial,
          userPk: token.user_pk,
          fromState: from,
          toState: plan.to,
          reason: options.reason ?? null,
          details: options.details ?? null,
        },
      ]);
      return plan.to === null ? null : view(trx, serial);
    });
  }

  const dropDevice = async (trx: Transaction<Database>, token: TokenRow) => {
    await trx.deleteFrom("devices").where("token_serial", "=", token.serial).execute();
  };

  return {
    transition,

    suspend: (principal: Principal, serial: string, reason?: string) =>
      transition(principal, serial, "suspend", "tokens.support", { reason: reason ?? null }) as Promise<Token>,

    // A token suspended while locked, or with failures counted, comes back with none: the
    // operator who reactivates it has looked at it, and its next typo must not lock it.
    reactivate: (principal: Principal, serial: string, reason?: string) =>
      transition(principal, serial, "reactivate", "tokens.support", {
        reason: reason ?? null,
        changes: () => ({ failures: 0, locked_until: null }),
      }) as Promise<Token>,

    unlock: (principal: Principal, serial: string, reason?: string) =>
      transition(principal, serial, "unlock", "tokens.support", {
        reason: reason ?? null,
        changes: () => ({ failures: 0, locked_until: null }),
      }) as Promise<Token>,

    /** Revoke: back to inventory for reuse, or lost (unusable until reinitialised). */
    revoke: (principal: Principal, serial: string, input: { to: "inventory" | "lost"; reason: string }) =>
      transition(principal, serial, input.to === "inventory" ? "revokeToInventory" : "revokeAsLost", "tokens.support", {
        reason: input.reason,
        changes: (token) => revokedChanges(token, input.to),
        after: dropDevice,
      }) as Promise<Token>,

    reinitialize: (principal: Principal, serial: string, input: { seed?: Omit<ImportedSeed, "serial">; reason?: string }) =>
      transition(principal, serial, "reinitialize", "tokens.manage", {
        reason: input.reason ?? null,
        changes: (token) => {
          if (tokenTypes[token.type as TokenType].keyOrigin !== "imported") return { failures: 0 };
          if (!input.seed) throw fail("HARDWARE_SEED_REQUIRED", { serial });
          const { ciphertext, keyId } = keyring.encrypt(input.seed.secret, serial);
          return {
            key_ciphertext: ciphertext,
            key_id: keyId,
            otp_mode: input.seed.otpMode,
            algorithm: input.seed.algorithm,
            digits: input.seed.digits,
            period_seconds: input.seed.periodSeconds,
            hotp_counter: input.seed.counter,
            failures: 0,
          };
        },
      }) as Promise<Token>,

    delete: async (principal: Principal, serial: string, reason?: string) => {
      await transition(principal, serial, "delete", "tokens.manage", { reason: reason ?? null });
    },
  };
}

export type TokenLifecycle = ReturnType<typeof createTokenLifecycle>;

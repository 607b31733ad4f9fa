import type { Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail, TesseraError } from "../../errors.js";
import { newId } from "../../ids.js";
import type { Database } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { revokedChanges } from "../tokens/lifecycle-service.js";
import type { TokenType } from "../tokens/types.js";
import { provisionInTransaction, type ProvisionDeps } from "./provision.js";
import { returnUnenrolledToken } from "./service.js";
import type { App } from "./task.js";

export interface GroupChange {
  userPk: string;
  joined: string[];
  left: string[];
}

export interface ProvisioningRule {
  id: string;
  virtualServerId: string;
  group: string;
  tokenType: string;
  apps: App[];
  createdAt: string;
}

const RULE_REVOKE_REASON = "left the group of a provisioning rule";

/**
 * Provisioning rules: joining a group provisions a token, leaving it revokes the token
 * the rule gave (back to inventory). Rules run inside the transaction that changed the
 * groups. A rule that cannot provision (inventory short, capacity, no email) does not
 * block the change of groups: it is skipped and the skip is audited.
 */
export function createProvisioningRules(deps: CoreDeps & { publicUrl: () => string }) {
  const { db, clock, audit } = deps;
  const provisionDeps: ProvisionDeps = { clock, audit, kind: deps.kind, keyring: deps.keyring, publicUrl: deps.publicUrl };

  async function applyInTransaction(trx: Transaction<Database>, principal: Principal, virtualServerId: string, changes: GroupChange[]): Promise<void> {
    const touched = [...new Set(changes.flatMap((change) => [...change.joined, ...change.left]))];
    if (touched.length === 0) return;
    const rules = await trx.selectFrom("provisioning_rules").selectAll().where("virtual_server_id", "=", virtualServerId).where("group_name", "in", touched).execute();
    if (rules.length === 0) return;
    for (const rule of rules) {
      const leaving = changes.filter((change) => change.left.includes(rule.group_name)).map((change) => change.userPk);
      for (const userPk of leaving) await revokeRuleTokens(trx, principal, rule.id, userPk);
      const joining = changes.filter((change) => change.joined.includes(rule.group_name)).map((change) => change.userPk);
      if (joining.length > 0) await provisionForRule(trx, principal, rule, joining);
    }
  }

  async function revokeRuleTokens(trx: Transaction<Database>, principal: Principal, ruleId: string, userPk: string) {
    const tokens = await trx
      .selectFrom("tokens")
      .innerJoin("provisioning_tasks", "provisioning_tasks.id", "tokens.provisioning_task_id")
      .select(["tokens.serial", "tokens.state", "tokens.virtual_server_id", "tokens.type", "tokens.user_pk"])
      .where("provisioning_tasks.rule_id", "=", ruleId)
      .where("tokens.user_pk", "=", userPk)
      .execute();
    const now = clock.nowMs();
    for (const token of tokens) {
      if (token.state === "assigned") {
        const open = await trx.selectFrom("enrollments").selectAll().where("token_serial", "=", token.serial).where("status", "in", ["pending", "claimed"]).execute();
        for (const enrollment of open) {
          await trx.updateTable("enrollments").set({ status: "cancelled", claim: null, updated_at: now }).where("id", "=", enrollment.id).execute();
          await returnUnenrolledToken(trx, deps, principal, enrollment, RULE_REVOKE_REASON);
        }
        continue;
      }
      if (!["active", "suspended", "locked"].includes(token.state)) continue;
      await trx
        .updateTable("tokens")
        .set({ ...revokedChanges(token, "inventory"), state: "inventory", state_reason: RULE_REVOKE_REASON, state_changed_at: now, updated_at: now })
        .where("serial", "=", token.serial)
        .where("state", "=", token.state)
        .execute();
      await trx.deleteFrom("devices").where("token_serial", "=", token.serial).execute();
      await audit.append(trx, principal, [
        {
          action: "token.revokeToInventory",
          virtualServerId: token.virtual_server_id,
          targetType: "token",
          targetId: token.serial,
          tokenSerial: token.serial,
          userPk,
          fromState: token.state,
          toState: "inventory",
          reason: RULE_REVOKE_REASON,
          details: { ruleId },
        },
      ]);
    }
  }

  async function provisionForRule(
    trx: Transaction<Database>,
    principal: Principal,
    rule: { id: string; virtual_server_id: string; group_name: string; token_type: string; apps: string },
    userPks: string[],
  ) {
    // Users who already hold a token from this rule keep it.
    const holding = new Set(
      (
        await trx
          .selectFrom("tokens")
          .innerJoin("provisioning_tasks", "provisioning_tasks.id", "tokens.provisioning_task_id")
          .select("tokens.user_pk")
          .where("provisioning_tasks.rule_id", "=", rule.id)
          .where("tokens.user_pk", "in", userPks)
          .execute()
      ).map((row) => row.user_pk),
    );
    const wanted = userPks.filter((pk) => !holding.has(pk));
    if (wanted.length === 0) return;
    const users = await trx.selectFrom("users").select(["id", "user_id", "first_name", "last_name", "email"]).where("id", "in", wanted).orderBy("user_id").execute();
    // What provisioning would refuse is checked first, so that a refusal never leaves the
    // surrounding transaction half done: the rule is skipped and says why.
    const available = await trx
      .selectFrom("tokens")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("virtual_server_id", "=", rule.virtual_server_id)
      .where("state", "=", "inventory")
      .where("type", "=", rule.token_type)
      .where("user_pk", "is", null)
      .executeTakeFirstOrThrow();
    const withoutEmail = users.filter((user) => user.email === "");
    const skip = async (code: string, count: number) =>
      audit.append(trx, principal, [
        { action: "provisioning.rule_skipped", virtualServerId: rule.virtual_server_id, targetType: "token", targetId: rule.id, details: { ruleId: rule.id, group: rule.group_name, code, users: count } },
      ]);
    if (Number(available.n) < users.length) return skip("INVENTORY_SHORT", users.length);
    if (withoutEmail.length > 0) return skip("USER_EMAIL_MISSING", withoutEmail.length);
    try {
      await provisionInTransaction(trx, provisionDeps, principal, {
        virtualServerId: rule.virtual_server_id,
        users,
        tokenType: rule.token_type as TokenType,
        apps: JSON.parse(rule.apps) as App[],
        kind: "rule",
        ruleId: rule.id,
      });
    } catch (error) {
      // Refusals found before any write (capacity, apps) skip the rule; anything else fails the change.
      if (error instanceof TesseraError && ["USER_CAPACITY_EXCEEDED", "APPS_NOT_ALLOWED"].includes(error.code)) return skip(error.code, users.length);
      throw error;
    }
  }

  return {
    applyInTransaction,

    async create(principal: Principal, input: { virtualServerId: string; group: string; tokenType: TokenType; apps?: App[] }): Promise<ProvisioningRule> {
      return db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, input.virtualServerId, "tokens.manage");
        const exists = await trx
          .selectFrom("provisioning_rules")
          .select("id")
          .where("virtual_server_id", "=", input.virtualServerId)
          .where("group_name", "=", input.group)
          .where("token_type", "=", input.tokenType)
          .executeTakeFirst();
        if (exists) throw fail("RULE_EXISTS", { group: input.group, type: input.tokenType });
        const now = clock.nowMs();
        const apps = input.tokenType === "mobile" ? (input.apps ?? ["tessera", "otp-app"]) : [];
        const row = { id: newId("rule"), virtual_server_id: input.virtualServerId, group_name: input.group, token_type: input.tokenType, apps: JSON.stringify(apps), created_at: now };
        await trx.insertInto("provisioning_rules").values(row).execute();
        await audit.append(trx, principal, [
          { action: "provisioning.rule_create", virtualServerId: input.virtualServerId, targetType: "token", targetId: row.id, details: { group: input.group, tokenType: input.tokenType, apps } },
        ]);
        // Members already in the group are provisioned now, as if they had just joined.
        const members = await trx.selectFrom("user_groups").select("user_pk").where("virtual_server_id", "=", input.virtualServerId).where("group_name", "=", input.group).execute();
        for (let i = 0; i < members.length; i += 1000) {
          await provisionForRule(trx, principal, row, members.slice(i, i + 1000).map((member) => member.user_pk));
        }
        return { id: row.id, virtualServerId: row.virtual_server_id, group: row.group_name, tokenType: row.token_type, apps: apps as App[], createdAt: new Date(now).toISOString() };
      });
    },

    async list(principal: Principal, virtualServerId: string): Promise<ProvisioningRule[]> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "tokens.read");
      const rows = await db.selectFrom("provisioning_rules").selectAll().where("virtual_server_id", "=", virtualServerId).orderBy("group_name").execute();
      return rows.map((row) => ({ id: row.id, virtualServerId: row.virtual_server_id, group: row.group_name, tokenType: row.token_type, apps: JSON.parse(row.apps) as App[], createdAt: new Date(row.created_at).toISOString() }));
    },

    /** Deleting a rule stops it; tokens it gave stay with their users. */
    async delete(principal: Principal, ruleId: string): Promise<void> {
      await db.transaction().execute(async (trx) => {
        const rule = await trx.selectFrom("provisioning_rules").selectAll().where("id", "=", ruleId).executeTakeFirst();
        if (!rule) throw fail("RULE_NOT_FOUND", { id: ruleId });
        await findVisibleVirtualServer(trx, principal, rule.virtual_server_id, "tokens.manage").catch(() => {
          throw fail("RULE_NOT_FOUND", { id: ruleId });
        });
        await trx.updateTable("provisioning_tasks").set({ rule_id: null }).where("rule_id", "=", ruleId).execute();
        await trx.deleteFrom("provisioning_rules").where("id", "=", ruleId).execute();
        await audit.append(trx, principal, [{ action: "provisioning.rule_delete", virtualServerId: rule.virtual_server_id, targetType: "token", targetId: ruleId, details: { group: rule.group_name } }]);
      });
    },
  };
}

export type ProvisioningRules = ReturnType<typeof createProvisioningRules>;

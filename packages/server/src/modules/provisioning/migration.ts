import type { Kysely } from "kysely";
import type { CoreDeps } from "../../deps.js";
import type { Database } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import type { TokenLifecycle } from "../tokens/lifecycle-service.js";
import type { ProvisioningService } from "./service.js";
import type { ProvisioningTask } from "./task.js";

/** Why migrated tokens left their users; also how their reuse is found later. */
export const MIGRATION_REASON = "migrated to the tessera app";

export interface MigrationCandidate {
  userId: string;
  /** The mobile token on a generic OTP app. */
  serial: string;
  target: string | null;
  /** Where the user stands: not started, a tessera token provisioned, or one active. */
  stage: "not_started" | "provisioned" | "moved";
  newSerial: string | null;
}

/** Users whose active mobile token lives on otp-app, and how far each has come towards the tessera app. */
async function candidates(db: Kysely<Database>, virtualServerId: string): Promise<MigrationCandidate[]> {
  const old = await db
    .selectFrom("tokens")
    .innerJoin("devices", "devices.token_serial", "tokens.serial")
    .innerJoin("users", "users.id", "tokens.user_pk")
    .select(["users.id as user_pk", "users.user_id", "tokens.serial", "devices.target"])
    .where("tokens.virtual_server_id", "=", virtualServerId)
    .where("tokens.type", "=", "mobile")
    .where("tokens.state", "=", "active")
    .where("devices.app", "=", "otp-app")
    .orderBy("users.user_id")
    .execute();
  if (old.length === 0) return [];
  const newer = new Map<string, { serial: string; stage: "provisioned" | "moved" }>();
  const userPks = [...new Set(old.map((row) => row.user_pk))];
  for (let i = 0; i < userPks.length; i += 1000) {
    const rows = await db
      .selectFrom("tokens")
      .leftJoin("devices", "devices.token_serial", "tokens.serial")
      .innerJoin("provisioning_tasks", "provisioning_tasks.id", "tokens.provisioning_task_id")
      .select(["tokens.user_pk", "tokens.serial", "tokens.state", "devices.app"])
      .where("tokens.user_pk", "in", userPks.slice(i, i + 1000))
      .where("tokens.type", "=", "mobile")
      .where((eb) => eb.or([eb("devices.app", "=", "tessera"), eb.and([eb("tokens.state", "=", "assigned"), eb("provisioning_tasks.apps", "like", '%"tessera"%')])]))
      .execute();
    for (const row of rows) {
      const stage = row.state === "active" && row.app === "tessera" ? "moved" : "provisioned";
      const known = newer.get(row.user_pk!);
      if (!known || (known.stage === "provisioned" && stage === "moved")) newer.set(row.user_pk!, { serial: row.serial, stage });
    }
  }
  return old.map((row) => {
    const next = newer.get(row.user_pk);
    return { userId: row.user_id, serial: row.serial, target: row.target, stage: next?.stage ?? "not_started", newSerial: next?.serial ?? null };
  });
}

/**
 * Carrying an organisation from a generic OTP app to the push-capable tessera app
 * (DESIGN section 2): plan, provision every remaining user a tessera token in one task,
 * then retire each old token once its owner's new one is active and reuse it.
 */
export function createMigrationService(deps: Pick<CoreDeps, "db" | "audit"> & { provisioning: ProvisioningService; lifecycle: TokenLifecycle }) {
  const { db } = deps;
  return {
    async plan(principal: Principal, virtualServerId: string) {
      await findVisibleVirtualServer(db, principal, virtualServerId, "tokens.read");
      const users = await candidates(db, virtualServerId);
      const count = (stage: MigrationCandidate["stage"]) => users.filter((user) => user.stage === stage).length;
      return { virtualServerId, total: users.length, notStarted: count("not_started"), provisioned: count("provisioned"), moved: count("moved"), users };
    },

    /** One task provisioning a mobile token for the tessera app to each user not yet started. */
    async start(principal: Principal, virtualServerId: string, input: { stopAt?: string } = {}): Promise<ProvisioningTask | null> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "tokens.manage");
      const waiting = (await candidates(db, virtualServerId)).filter((user) => user.stage === "not_started");
      if (waiting.length === 0) return null;
      return deps.provisioning.createTask(
        principal,
        { virtualServerId, users: { userIds: [...new Set(waiting.map((user) => user.userId))] }, tokenType: "mobile", apps: ["tessera"], stopAt: input.stopAt },
        "migration",
      );
    },

    /** Revokes every old otp-app token whose owner's tessera token is active, back to inventory for reuse. */
    async retire(principal: Principal, virtualServerId: string) {
      await findVisibleVirtualServer(db, principal, virtualServerId, "tokens.support");
      const moved = (await candidates(db, virtualServerId)).filter((user) => user.stage === "moved");
      const retired: string[] = [];
      for (const user of moved) {
        await deps.lifecycle.revoke(principal, user.serial, { to: "inventory", reason: MIGRATION_REASON });
        retired.push(user.serial);
      }
      // Reuse is read from the audit trail, the records just written included (the tokens
      // are retired either way: should the records fail to link, counted and logged, the
      // figure leaves them out).
      await deps.audit.settle().catch(() => undefined);
      return { virtualServerId, retired: retired.length, serials: retired, ...(await reuse(db, virtualServerId)) };
    },
  };
}

/** Of the tokens ever retired by migration here, how many were provisioned to someone again since. */
async function reuse(db: Kysely<Database>, virtualServerId: string): Promise<{ retiredEver: number; reusedSince: number }> {
  const retirements = await db
    .selectFrom("audit_log")
    .select(["token_serial", "seq"])
    .where("virtual_server_id", "=", virtualServerId)
    .where("action", "=", "token.revokeToInventory")
    .where("reason", "=", MIGRATION_REASON)
    .execute();
  let reusedSince = 0;
  for (let i = 0; i < retirements.length; i += 500) {
    const chunk = retirements.slice(i, i + 500);
    const provisions = await db
      .selectFrom("audit_log")
      .select(["token_serial", "seq"])
      .where("action", "=", "token.provision")
      .where("token_serial", "in", chunk.map((row) => row.token_serial!))
      .execute();
    for (const retirement of chunk) {
      if (provisions.some((p) => p.token_serial === retirement.token_serial && p.seq > retirement.seq)) reusedSince += 1;
    }
  }
  return { retiredEver: retirements.length, reusedSince };
}

export type MigrationService = ReturnType<typeof createMigrationService>;

import type { Kysely } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { policySettingsSchema, resolvePolicy, type PolicyOverrides, type PolicyUpdate, type ResolvedPolicy } from "./policy.js";

export interface PolicyView extends ResolvedPolicy {
  virtualServerId: string;
  overrides: PolicyOverrides;
}

function parseOverrides(settings: string): PolicyOverrides {
  return policySettingsSchema.partial().parse(JSON.parse(settings));
}

/** The effective policy of a virtual server, walking its path from the root. */
export async function effectivePolicy(db: Kysely<Database>, virtualServerId: string): Promise<PolicyView> {
  const vs = await db.selectFrom("virtual_servers").select("path").where("id", "=", virtualServerId).executeTakeFirstOrThrow();
  const ancestry = vs.path.split("/").filter(Boolean);
  const rows = await db.selectFrom("policies").selectAll().where("virtual_server_id", "in", ancestry).execute();
  const byId = new Map(rows.map((row) => [row.virtual_server_id, parseOverrides(row.settings)]));
  const chain = ancestry.map((id) => ({ virtualServerId: id, overrides: byId.get(id) ?? {} }));
  return { virtualServerId, overrides: byId.get(virtualServerId) ?? {}, ...resolvePolicy(chain) };
}

export function createPolicyService(deps: Pick<CoreDeps, "db" | "clock" | "audit">) {
  const { db, clock, audit } = deps;
  return {
    async get(principal: Principal, virtualServerId: string): Promise<PolicyView> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "policy.read");
      return effectivePolicy(db, virtualServerId);
    },

    async update(principal: Principal, virtualServerId: string, update: PolicyUpdate): Promise<PolicyView> {
      return db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, virtualServerId, "policy.manage");
        const before = await effectivePolicy(trx, virtualServerId);
        const overrides: Record<string, unknown> = { ...before.overrides };
        for (const [field, value] of Object.entries(update)) {
          if (value === undefined) continue;
          if (value === null) delete overrides[field];
          else overrides[field] = value;
        }
        const parsed = policySettingsSchema.partial().safeParse(overrides);
        if (!parsed.success) throw fail("POLICY_INVALID", { problem: parsed.error.issues.map((i) => i.message).join("; ") });
        const settings = JSON.stringify(parsed.data);
        const now = clock.nowMs();
        await trx
          .insertInto("policies")
          .values({ virtual_server_id: virtualServerId, settings, updated_at: now })
          .onConflict((conflict) => conflict.column("virtual_server_id").doUpdateSet({ settings, updated_at: now }))
          .execute();
        await audit.append(trx, principal, [
          {
            action: "policy.update",
            virtualServerId,
            targetType: "policy",
            targetId: virtualServerId,
            details: { before: before.overrides, after: parsed.data },
          },
        ]);
        return effectivePolicy(trx, virtualServerId);
      });
    },
  };
}

export type PolicyService = ReturnType<typeof createPolicyService>;

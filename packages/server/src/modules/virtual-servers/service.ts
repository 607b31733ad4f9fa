import type { Kysely } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import type { Database, VirtualServerRow } from "../../storage/schema.js";
import { canSee, requirePermission, type Permission, type Principal } from "../operators/access.js";

export interface VirtualServer {
  id: string;
  name: string;
  parentId: string | null;
  capacity: number | null;
  createdAt: string;
  updatedAt: string;
}

export function toVirtualServer(row: VirtualServerRow): VirtualServer {
  return {
    id: row.id,
    name: row.name,
    parentId: row.parent_id,
    capacity: row.capacity,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

/** Loads a virtual server the principal may see; any other id is "not found". */
export async function findVisibleVirtualServer(
  db: Kysely<Database>,
  principal: Principal,
  id: string,
  permission?: Permission,
): Promise<VirtualServerRow> {
  const row = await db.selectFrom("virtual_servers").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row || !canSee(principal, row)) throw fail("VIRTUAL_SERVER_NOT_FOUND", { id });
  // Scope before role: what the operator cannot see is "not found", never "forbidden".
  if (permission) requirePermission(principal, permission);
  return row;
}

/**
 * Only someone above a virtual server may change what bounds it (its capacity): an
 * admin of a service provider for its children, or the installer.
 */
function governs(principal: Principal, row: VirtualServerRow): boolean {
  return principal.scope.includesChildren && row.path !== principal.scope.path && row.path.startsWith(principal.scope.path);
}

export function createVirtualServerService(deps: Pick<CoreDeps, "db" | "clock" | "audit">) {
  const { db, clock, audit } = deps;

  return {
    async create(principal: Principal, input: { name: string; parentId?: string | null; capacity?: number | null }) {
      return db.transaction().execute(async (trx) => {
        let parentPath = "/";
        if (input.parentId) {
          const parent = await findVisibleVirtualServer(trx, principal, input.parentId, "virtualServers.manage");
          // Creating a child needs scope over the parent's children.
          if (!principal.scope.includesChildren) throw fail("SCOPE_ESCALATION");
          parentPath = parent.path;
        } else if (principal.kind !== "installer") {
          // Top-level virtual servers are created by the installer (`tessera bootstrap`).
          throw fail("SCOPE_ESCALATION");
        }
        const siblings = trx.selectFrom("virtual_servers").select("id").where("name", "=", input.name);
        const clash = await (input.parentId
          ? siblings.where("parent_id", "=", input.parentId)
          : siblings.where("parent_id", "is", null)
        ).executeTakeFirst();
        if (clash) throw fail("VIRTUAL_SERVER_NAME_TAKEN", { name: input.name });
        const now = clock.nowMs();
        const id = newId("vs");
        const row: VirtualServerRow = {
          id,
          name: input.name,
          parent_id: input.parentId ?? null,
          path: `${parentPath}${id}/`,
          capacity: input.capacity ?? null,
          created_at: now,
          updated_at: now,
        };
        await trx.insertInto("virtual_servers").values(row).execute();
        await audit.append(trx, principal, [
          {
            action: "virtual_server.create",
            virtualServerId: id,
            targetType: "virtual_server",
            targetId: id,
            details: { name: row.name, parentId: row.parent_id, capacity: row.capacity },
          },
        ]);
        return toVirtualServer(row);
      });
    },

    async list(principal: Principal): Promise<VirtualServer[]> {
      requirePermission(principal, "virtualServers.read");
      const { path, includesChildren } = principal.scope;
      let query = db.selectFrom("virtual_servers").selectAll().orderBy("path");
      query = includesChildren
        ? query.where("path", ">=", path).where("path", "<", `${path}\uffff`)
        : query.where("path", "=", path);
      return (await query.execute()).map(toVirtualServer);
    },

    async get(principal: Principal, id: string): Promise<VirtualServer> {
      return toVirtualServer(await findVisibleVirtualServer(db, principal, id, "virtualServers.read"));
    },

    async update(principal: Principal, id: string, input: { name?: string; capacity?: number | null }) {
      return db.transaction().execute(async (trx) => {
        const row = await findVisibleVirtualServer(trx, principal, id, "virtualServers.manage");
        if (input.capacity !== undefined && principal.kind !== "installer" && !governs(principal, row)) {
          throw fail("SCOPE_ESCALATION");
        }
        const next = {
          name: input.name ?? row.name,
          capacity: input.capacity === undefined ? row.capacity : input.capacity,
          updated_at: clock.nowMs(),
        };
        await trx.updateTable("virtual_servers").set(next).where("id", "=", id).execute();
        await audit.append(trx, principal, [
          {
            action: "virtual_server.update",
            virtualServerId: id,
            targetType: "virtual_server",
            targetId: id,
            details: { before: { name: row.name, capacity: row.capacity }, after: { name: next.name, capacity: next.capacity } },
          },
        ]);
        return toVirtualServer({ ...row, ...next });
      });
    },
  };
}

export type VirtualServerService = ReturnType<typeof createVirtualServerService>;

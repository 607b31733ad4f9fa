import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, pageLimit } from "../../http/schemas.js";
import { requirePermission } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { decodeSeqCursor, encodeSeqCursor } from "./service.js";

const auditRecordSchema = z
  .object({
    seq: z.number().int(),
    at: z.string(),
    actor: z.string(),
    operatorId: z.string().nullable(),
    action: z.string(),
    virtualServerId: z.string().nullable(),
    targetType: z.string(),
    targetId: z.string().nullable(),
    tokenSerial: z.string().nullable(),
    userId: z.string().nullable(),
    fromState: z.string().nullable(),
    toState: z.string().nullable(),
    reason: z.string().nullable(),
    details: z.record(z.string(), z.unknown()).nullable(),
    hash: z.string(),
  })
  .meta({ id: "AuditRecord" });

const isoTime = z.iso.datetime({ offset: true });

export const auditRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  const { db } = services.storage;

  app.get(
    "/audit",
    {
      schema: {
        operationId: "listAudit",
        summary: "A virtual server's audit trail, newest first, by time, operator, user, token or action",
        querystring: z.strictObject({
          virtualServerId: z.string().min(1).max(64),
          from: isoTime.optional(),
          to: isoTime.optional(),
          operatorId: z.string().min(1).max(64).optional(),
          userId: z.string().min(1).max(128).optional(),
          serial: z.string().min(1).max(64).optional(),
          action: z.string().min(1).max(64).optional(),
          cursor: z.string().max(64).optional(),
          limit: pageLimit,
        }),
        response: { 200: z.object({ items: z.array(auditRecordSchema), nextCursor: z.string().nullable() }), ...commonErrors },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const q = request.query;
      await findVisibleVirtualServer(db, principal, q.virtualServerId);
      requirePermission(principal, "audit.read");
      const before = decodeSeqCursor(q.cursor);
      // The first page shows the latest records: those committed a moment ago too. Should
      // they fail to link (counted and logged), the trail is still shown as it stands.
      if (before === undefined) await services.audit.settle().catch(() => undefined);
      let query = db
        .selectFrom("audit_log")
        .leftJoin("users", "users.id", "audit_log.user_pk")
        .selectAll("audit_log")
        .select("users.user_id")
        .where("audit_log.virtual_server_id", "=", q.virtualServerId);
      if (before !== undefined) query = query.where("audit_log.seq", "<", before);
      if (q.from) query = query.where("audit_log.at", ">=", Date.parse(q.from));
      if (q.to) query = query.where("audit_log.at", "<", Date.parse(q.to));
      if (q.operatorId) query = query.where("audit_log.operator_id", "=", q.operatorId);
      if (q.serial) query = query.where("audit_log.token_serial", "=", q.serial);
      if (q.action) query = query.where("audit_log.action", "=", q.action);
      if (q.userId) {
        const user = await db
          .selectFrom("users")
          .select("id")
          .where("virtual_server_id", "=", q.virtualServerId)
          .where("user_id", "=", q.userId)
          .executeTakeFirst();
        if (!user) return { items: [], nextCursor: null };
        query = query.where("audit_log.user_pk", "=", user.id);
      }
      const rows = await query.orderBy("audit_log.seq", "desc").limit(q.limit + 1).execute();
      const page = rows.slice(0, q.limit);
      return {
        items: page.map((row) => ({
          seq: row.seq,
          at: new Date(row.at).toISOString(),
          actor: row.actor,
          operatorId: row.operator_id,
          action: row.action,
          virtualServerId: row.virtual_server_id,
          targetType: row.target_type,
          targetId: row.target_id,
          tokenSerial: row.token_serial,
          userId: row.user_id,
          fromState: row.from_state,
          toState: row.to_state,
          reason: row.reason,
          details: row.details === null ? null : (JSON.parse(row.details) as Record<string, unknown>),
          hash: row.hash,
        })),
        nextCursor: rows.length > q.limit ? encodeSeqCursor(page.at(-1)!.seq) : null,
      };
    },
  );
};

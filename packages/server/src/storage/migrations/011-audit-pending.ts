import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Audit records waiting for their link in the chain (PostgreSQL). A transaction writes
// its records here, with the change they describe, and takes no lock for them; the
// chain is extended shortly after, by whichever node gets there first, which moves the
// records into `audit_log` in one short transaction of its own (`modules/audit`). On
// SQLite the table stays empty: its single writer extends the chain at no extra cost.
export function auditPendingMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bytewiseText = kind === "postgres" ? sql`text collate "C"` : sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("audit_pending")
        // The order the records were written in: the chain takes them in this order
        // among those committed when it looks.
        .addColumn("id", kind === "postgres" ? sql`bigint generated always as identity` : sql`integer`, (c) => (kind === "postgres" ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn("at", bigint, (c) => c.notNull())
        .addColumn("actor", text, (c) => c.notNull())
        .addColumn("operator_id", text)
        .addColumn("action", text, (c) => c.notNull())
        .addColumn("virtual_server_id", text)
        .addColumn("target_type", text, (c) => c.notNull())
        .addColumn("target_id", text)
        .addColumn("token_serial", bytewiseText)
        .addColumn("user_pk", text)
        .addColumn("from_state", text)
        .addColumn("to_state", text)
        .addColumn("reason", text)
        .addColumn("details", text)
        .execute();
    },
  };
}

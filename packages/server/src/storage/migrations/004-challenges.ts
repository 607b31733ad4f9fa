import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Push OTP challenges: one pending push login, what the app shows (resource, source,
// time, a number to match) and how it ended.
export function challengesMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("challenges")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("application_id", text, (c) => c.notNull())
        .addColumn("user_pk", text, (c) => c.notNull())
        .addColumn("device_ids", text, (c) => c.notNull())
        .addColumn("resource_name", text, (c) => c.notNull())
        .addColumn("source", text, (c) => c.notNull())
        .addColumn("number_to_match", text, (c) => c.notNull())
        .addColumn("status", text, (c) => c.notNull())
        .addColumn("answered_serial", text)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("expires_at", bigint, (c) => c.notNull())
        .addColumn("answered_at", bigint)
        .execute();
      await db.schema.createIndex("challenges_status_expiry").on("challenges").columns(["status", "expires_at"]).execute();
      await db.schema.createIndex("challenges_user").on("challenges").columns(["user_pk", "status"]).execute();
    },
  };
}

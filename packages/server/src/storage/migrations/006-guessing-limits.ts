import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Failed logins counted per source address and per user over a window, shared by every
// node on one PostgreSQL (modules/auth/limits.ts), and operator password attempts
// (modules/operators/login-limits.ts). A single SQLite server counts in
// memory and leaves this table empty.
export function guessingLimitsMigration(kind: DatabaseKind) {
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("auth_failures")
        .addColumn("key", sql`text`, (c) => c.primaryKey())
        .addColumn("failures", sql`integer`, (c) => c.notNull())
        .addColumn("window_ends", bigint, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("auth_failures_window_ends").on("auth_failures").column("window_ends").execute();
    },
  };
}

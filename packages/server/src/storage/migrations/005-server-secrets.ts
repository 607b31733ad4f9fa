import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Secrets of the service itself, shared by every node: the Web Push (VAPID) key pair,
// whose public half each device's push subscription is bound to. The private half is
// sealed under the master key like token keys.
export function serverSecretsMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("server_secrets")
        .addColumn("name", text, (c) => c.primaryKey())
        .addColumn("public_value", text, (c) => c.notNull())
        .addColumn("secret_ciphertext", text, (c) => c.notNull())
        .addColumn("secret_key_id", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .execute();
    },
  };
}

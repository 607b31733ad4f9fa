import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Applications ("auth nodes"): the RADIUS and REST clients that ask Tessera to
// authenticate users, each with the resource name shown in push notifications.
export function applicationsMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("applications")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("name", text, (c) => c.notNull())
        .addColumn("kind", text, (c) => c.notNull())
        .addColumn("resource_name", text, (c) => c.notNull())
        .addColumn("push_otp", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("push_mode", text, (c) => c.notNull())
        // RADIUS: the client addresses (JSON list of addresses and CIDR ranges) and the
        // shared secret, encrypted: RADIUS needs it in the clear to check packets.
        .addColumn("radius_addresses", text)
        .addColumn("radius_secret_ciphertext", text)
        .addColumn("radius_secret_key_id", text)
        // REST: the API key's id and the SHA-256 of its secret.
        .addColumn("api_key_id", text, (c) => c.unique())
        .addColumn("api_key_hash", text)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .addUniqueConstraint("applications_vs_name", ["virtual_server_id", "name"])
        .execute();
    },
  };
}

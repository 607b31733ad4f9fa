import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// The first schema. Columns that are searched by prefix (serials, user ids) compare
// bytewise on both databases: SQLite's default BINARY collation, and "C" on PostgreSQL,
// whose locale collations would otherwise break prefix ranges and index use.

export function initialMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bytewiseText = kind === "postgres" ? sql`text collate "C"` : sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;

  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("meta")
        .addColumn("key", text, (c) => c.primaryKey())
        .addColumn("value", text, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("virtual_servers")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("name", text, (c) => c.notNull())
        .addColumn("parent_id", text, (c) => c.references("virtual_servers.id"))
        .addColumn("path", bytewiseText, (c) => c.notNull().unique())
        .addColumn("capacity", bigint)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("virtual_servers_parent").on("virtual_servers").column("parent_id").execute();

      await db.schema
        .createTable("operators")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("email", text, (c) => c.notNull().unique())
        .addColumn("name", text, (c) => c.notNull())
        .addColumn("password_hash", text)
        .addColumn("role", text, (c) => c.notNull())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("scope_children", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("disabled", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("api_keys")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("operator_id", text, (c) => c.notNull().references("operators.id").onDelete("cascade"))
        .addColumn("name", text, (c) => c.notNull())
        .addColumn("secret_hash", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("last_used_at", bigint)
        .addColumn("revoked_at", bigint)
        .execute();

      await db.schema
        .createTable("sessions")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("operator_id", text, (c) => c.notNull().references("operators.id").onDelete("cascade"))
        .addColumn("secret_hash", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("expires_at", bigint, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("users")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("user_id", bytewiseText, (c) => c.notNull())
        .addColumn("first_name", text, (c) => c.notNull())
        .addColumn("last_name", text, (c) => c.notNull())
        .addColumn("email", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .addUniqueConstraint("users_vs_user_id", ["virtual_server_id", "user_id"])
        .execute();
      await db.schema.createIndex("users_vs_email").on("users").columns(["virtual_server_id", "email"]).execute();

      await db.schema
        .createTable("user_groups")
        .addColumn("user_pk", text, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("virtual_server_id", text, (c) => c.notNull())
        .addColumn("group_name", bytewiseText, (c) => c.notNull())
        .addPrimaryKeyConstraint("user_groups_pk", ["user_pk", "group_name"])
        .execute();
      await db.schema
        .createIndex("user_groups_vs_group")
        .on("user_groups")
        .columns(["virtual_server_id", "group_name", "user_pk"])
        .execute();

      await db.schema
        .createTable("tokens")
        .addColumn("serial", bytewiseText, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("type", text, (c) => c.notNull())
        .addColumn("state", text, (c) => c.notNull())
        .addColumn("user_pk", text, (c) => c.references("users.id"))
        .addColumn("otp_mode", text, (c) => c.notNull())
        .addColumn("algorithm", text, (c) => c.notNull())
        .addColumn("digits", bigint, (c) => c.notNull())
        .addColumn("period_seconds", bigint, (c) => c.notNull())
        .addColumn("key_ciphertext", text)
        .addColumn("key_id", text)
        .addColumn("hotp_counter", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("last_totp_step", bigint)
        .addColumn("drift_steps", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("failures", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("locked_until", bigint)
        .addColumn("state_reason", text)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .addColumn("state_changed_at", bigint, (c) => c.notNull())
        .execute();
      // Token lists are always per virtual server and ordered by serial (the cursor):
      // one index per filter keeps every page an index range scan.
      await db.schema.createIndex("tokens_vs_serial").on("tokens").columns(["virtual_server_id", "serial"]).execute();
      await db.schema
        .createIndex("tokens_vs_state_serial")
        .on("tokens")
        .columns(["virtual_server_id", "state", "serial"])
        .execute();
      await db.schema
        .createIndex("tokens_vs_type_serial")
        .on("tokens")
        .columns(["virtual_server_id", "type", "serial"])
        .execute();
      await db.schema.createIndex("tokens_user").on("tokens").columns(["user_pk", "serial"]).execute();

      await db.schema
        .createTable("devices")
        .addColumn("token_serial", bytewiseText, (c) => c.primaryKey().references("tokens.serial").onDelete("cascade"))
        .addColumn("app", text, (c) => c.notNull())
        .addColumn("target", text)
        .addColumn("device_type", text)
        .addColumn("app_version", text)
        .addColumn("push_at_enrollment", text, (c) => c.notNull())
        .addColumn("push_now", text, (c) => c.notNull())
        .addColumn("enrolled_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("policies")
        .addColumn("virtual_server_id", text, (c) => c.primaryKey().references("virtual_servers.id"))
        .addColumn("settings", text, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("audit_log")
        .addColumn("seq", bigint, (c) => c.primaryKey())
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
        .addColumn("prev_hash", text, (c) => c.notNull())
        .addColumn("hash", text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("audit_at").on("audit_log").columns(["at"]).execute();
      await db.schema.createIndex("audit_vs_seq").on("audit_log").columns(["virtual_server_id", "seq"]).execute();
      await db.schema.createIndex("audit_operator_seq").on("audit_log").columns(["operator_id", "seq"]).execute();
      await db.schema.createIndex("audit_token_seq").on("audit_log").columns(["token_serial", "seq"]).execute();
      await db.schema.createIndex("audit_user_seq").on("audit_log").columns(["user_pk", "seq"]).execute();

      // The audit trail is append-only in the database itself, not only by convention.
      if (kind === "postgres") {
        await sql`create function audit_log_append_only() returns trigger language plpgsql as $$
          begin raise exception 'audit_log is append-only'; end $$`.execute(db);
        await sql`create trigger audit_log_no_update before update or delete on audit_log
          for each row execute function audit_log_append_only()`.execute(db);
      } else {
        await sql`create trigger audit_log_no_update before update on audit_log
          begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
        await sql`create trigger audit_log_no_delete before delete on audit_log
          begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
      }

      await db.schema
        .createTable("serial_counters")
        .addColumn("prefix", text, (c) => c.primaryKey())
        .addColumn("next_value", bigint, (c) => c.notNull())
        .execute();
    },
  };
}

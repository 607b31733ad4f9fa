import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// Provisioning and enrollment: tasks over many users, one enrollment per provisioned
// token (its code kept only as a hash), the mail outbox written in the same
// transaction, per-tenant mail templates, group rules, and what the device tells us.

export function provisioningMigration(kind: DatabaseKind) {
  const text = sql`text`;
  const bytewiseText = kind === "postgres" ? sql`text collate "C"` : sql`text`;
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;

  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable("provisioning_rules")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("group_name", bytewiseText, (c) => c.notNull())
        .addColumn("token_type", text, (c) => c.notNull())
        .addColumn("apps", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addUniqueConstraint("provisioning_rules_vs_group_type", ["virtual_server_id", "group_name", "token_type"])
        .execute();

      await db.schema
        .createTable("provisioning_tasks")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("kind", text, (c) => c.notNull())
        .addColumn("token_type", text, (c) => c.notNull())
        .addColumn("apps", text, (c) => c.notNull())
        .addColumn("stop_at", bigint, (c) => c.notNull())
        .addColumn("status", text, (c) => c.notNull())
        .addColumn("rule_id", text, (c) => c.references("provisioning_rules.id"))
        .addColumn("created_by", text, (c) => c.notNull())
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("provisioning_tasks_vs").on("provisioning_tasks").columns(["virtual_server_id", "created_at"]).execute();

      await db.schema
        .createTable("enrollments")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("task_id", text, (c) => c.references("provisioning_tasks.id"))
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("token_serial", bytewiseText, (c) => c.notNull())
        .addColumn("user_pk", text, (c) => c.notNull())
        .addColumn("code_hash", text, (c) => c.notNull().unique())
        .addColumn("apps", text, (c) => c.notNull())
        .addColumn("status", text, (c) => c.notNull())
        .addColumn("expires_at", bigint, (c) => c.notNull())
        .addColumn("claimed_at", bigint)
        .addColumn("claim", text)
        .addColumn("enrolled_at", bigint)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("enrollments_task").on("enrollments").columns(["task_id", "status"]).execute();
      await db.schema.createIndex("enrollments_token").on("enrollments").columns(["token_serial", "status"]).execute();
      await db.schema.createIndex("enrollments_user").on("enrollments").columns(["user_pk", "status"]).execute();
      await db.schema.createIndex("enrollments_expiry").on("enrollments").columns(["status", "expires_at"]).execute();

      await db.schema
        .createTable("outbox")
        .addColumn("id", text, (c) => c.primaryKey())
        .addColumn("virtual_server_id", text)
        .addColumn("kind", text, (c) => c.notNull())
        .addColumn("recipient", text, (c) => c.notNull())
        .addColumn("subject", text, (c) => c.notNull())
        // Text and HTML bodies, encrypted under the master key: enrollment links are
        // credentials until used, and the database keeps no credential in the clear.
        .addColumn("body_ciphertext", text)
        .addColumn("body_key_id", text)
        .addColumn("status", text, (c) => c.notNull())
        .addColumn("attempts", bigint, (c) => c.notNull().defaultTo(0))
        .addColumn("next_attempt_at", bigint, (c) => c.notNull())
        .addColumn("lease_until", bigint)
        .addColumn("last_error", text)
        .addColumn("message_id", text, (c) => c.notNull())
        .addColumn("enrollment_id", text)
        .addColumn("created_at", bigint, (c) => c.notNull())
        .addColumn("sent_at", bigint)
        .execute();
      await db.schema.createIndex("outbox_due").on("outbox").columns(["status", "next_attempt_at"]).execute();
      await db.schema.createIndex("outbox_vs").on("outbox").columns(["virtual_server_id", "created_at"]).execute();
      await db.schema.createIndex("outbox_enrollment").on("outbox").column("enrollment_id").execute();

      await db.schema
        .createTable("mail_templates")
        .addColumn("virtual_server_id", text, (c) => c.notNull().references("virtual_servers.id"))
        .addColumn("kind", text, (c) => c.notNull())
        .addColumn("subject", text, (c) => c.notNull())
        .addColumn("text", text, (c) => c.notNull())
        .addColumn("html", text, (c) => c.notNull())
        .addColumn("updated_at", bigint, (c) => c.notNull())
        .addPrimaryKeyConstraint("mail_templates_pk", ["virtual_server_id", "kind"])
        .execute();

      await db.schema.alterTable("tokens").addColumn("provisioning_task_id", text).execute();

      for (const [column, type] of [
        ["device_id", text],
        ["signing_public_key", text],
        ["os", text],
        ["os_version", text],
        ["push_subscription", text],
        ["last_seen_at", bigint],
      ] as const) {
        await db.schema.alterTable("devices").addColumn(column, type).execute();
      }
      await db.schema.alterTable("devices").addColumn("live_capable", bigint, (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.createIndex("devices_device_id").on("devices").column("device_id").execute();
    },
  };
}

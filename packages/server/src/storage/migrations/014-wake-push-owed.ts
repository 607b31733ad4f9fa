import { sql, type Kysely } from "kysely";

// A push login whose devices have a Web Push subscription owes them the message that
// asks for the answer (it wakes a phone whose app is closed). The node that opens the
// login sends it after the commit and then clears the mark; a node that stopped in
// between, or a push service that failed, leaves it set, and any node sends it a few
// seconds later while the login is still open (modules/push/service.ts,
// `sendOwedWakes`). The partial index holds only the challenges still owed.
export function wakePushOwedMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("challenges").addColumn("wake_push_owed", "integer", (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.createIndex("challenges_wake_push_owed").on("challenges").column("created_at").where(sql.ref("wake_push_owed"), "=", 1).execute();
    },
  };
}

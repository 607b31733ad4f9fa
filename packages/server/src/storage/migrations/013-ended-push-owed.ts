import { sql, type Kysely } from "kysely";

// A push login whose devices had a Web Push subscription owes them a message when it
// ends, so that its notification leaves the tray. The node that ends it sends that
// message after the commit and then clears the mark; a node that stopped in between
// leaves it set, and any node sends it a little later (modules/push/service.ts,
// `sendOwedEnds`). The partial index holds only the challenges still owed.
export function endedPushOwedMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("challenges").addColumn("end_push_owed", "integer", (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.createIndex("challenges_end_push_owed").on("challenges").column("answered_at").where(sql.ref("end_push_owed"), "=", 1).execute();
    },
  };
}

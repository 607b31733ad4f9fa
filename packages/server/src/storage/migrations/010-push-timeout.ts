import { sql, type Kysely } from "kysely";

// How long a push login at an application waits for the user's answer: the challenge's
// lifetime, and how long a RADIUS request in hold mode is held. A NAS that gives up
// after 20 seconds needs a challenge that ends by then, or the user approves into the void.
export function pushTimeoutMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .alterTable("applications")
        .addColumn("push_timeout_seconds", sql`integer`, (c) => c.notNull().defaultTo(60))
        .execute();
    },
  };
}

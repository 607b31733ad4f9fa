import type { Kysely } from "kysely";

// A device's look for its sign-in requests finds them by user: with the expiry in the
// user's index, that index answers the whole condition (user, pending, not expired), and
// both databases take it over the (status, expiry) one, which held every user's open
// requests and made each device's look cost as much as all of them.
export function challengesByUserMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.createIndex("challenges_user_open").on("challenges").columns(["user_pk", "status", "expires_at"]).execute();
      await db.schema.dropIndex("challenges_user").execute();
    },
  };
}

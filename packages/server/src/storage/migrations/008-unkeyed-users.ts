import { sql, type Kysely } from "kysely";

// Users without a search key: none once migration 007 has run, except those a node of
// an older version writes during a rolling upgrade. This partial index stays empty in
// the steady state, so the sweep that gives them their keys (modules/users/search-keys.ts)
// costs one probe a minute however many users there are.
export function unkeyedUsersMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await sql`create index users_unkeyed on users (id) where search_key = ''`.execute(db);
    },
  };
}

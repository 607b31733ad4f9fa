import { sql, type Kysely } from "kysely";
import { userSearchKey } from "../../modules/users/user.js";
import type { DatabaseKind } from "../database.js";

// Case-insensitive user search: each user's searchable fields, folded in JavaScript
// (modules/users/user.ts), so that "smith" finds "Smith" and "öl" finds "Ölund" on
// both databases alike. Existing users get theirs here, a thousand at a time.
export function userSearchMigration(kind: DatabaseKind) {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("users").addColumn("search_key", sql`text`, (c) => c.notNull().defaultTo("")).execute();
      const users = db as unknown as Kysely<{ users: { id: string; user_id: string; first_name: string; last_name: string; email: string; search_key: string } }>;
      let after = "";
      for (;;) {
        const rows = await users.selectFrom("users").select(["id", "user_id", "first_name", "last_name", "email"]).where("id", ">", after).orderBy("id").limit(1000).execute();
        if (rows.length === 0) break;
        if (kind === "postgres") {
          // One statement a thousand users: a round trip each would take minutes on a large table.
          const keyed = sql.join(rows.map((row) => sql`(${row.id}, ${userSearchKey(row)})`));
          await sql`update users set search_key = keyed.search_key from (values ${keyed}) as keyed(id, search_key) where users.id = keyed.id`.execute(db);
        } else {
          for (const row of rows) await users.updateTable("users").set({ search_key: userSearchKey(row) }).where("id", "=", row.id).execute();
        }
        after = rows.at(-1)!.id;
      }
    },
  };
}

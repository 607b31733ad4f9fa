import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../../storage/database.js";
import type { Database } from "../../storage/schema.js";
import { userSearchKey } from "./user.js";

/** Users given their keys in one statement (PostgreSQL) or one transaction (SQLite). */
const BATCH = 500;

/**
 * Gives users without a search key theirs. After migration 007 only a node of an older
 * version writes such users, during a rolling upgrade; every node runs this once a
 * minute, so a search finds them within a minute of the upgrade instead of never. The
 * partial index `users_unkeyed` (migration 008) makes the look for them one probe.
 *
 * A key is written only while the row still holds the fields it was folded from and no
 * key: should an old node change the user in between, the next sweep folds it again.
 * Returns how many users got their key.
 */
export async function fillMissingSearchKeys(db: Kysely<Database>, kind: DatabaseKind): Promise<number> {
  let filled = 0;
  let after = "";
  for (;;) {
    const rows = await db
      .selectFrom("users")
      .select(["id", "user_id", "first_name", "last_name", "email"])
      .where("search_key", "=", "")
      .where("id", ">", after)
      .orderBy("id")
      .limit(BATCH)
      .execute();
    if (rows.length === 0) return filled;
    if (kind === "postgres") {
      const keyed = sql.join(rows.map((row) => sql`(${row.id}, ${row.user_id}, ${row.first_name}, ${row.last_name}, ${row.email}, ${userSearchKey(row)})`));
      const result = await sql`
        update users set search_key = keyed.search_key
        from (values ${keyed}) as keyed(id, user_id, first_name, last_name, email, search_key)
        where users.id = keyed.id and users.search_key = ''
          and users.user_id = keyed.user_id and users.first_name = keyed.first_name
          and users.last_name = keyed.last_name and users.email = keyed.email`.execute(db);
      filled += Number(result.numAffectedRows ?? 0);
    } else {
      filled += await db.transaction().execute(async (trx) => {
        let count = 0;
        for (const row of rows) {
          const result = await trx
            .updateTable("users")
            .set({ search_key: userSearchKey(row) })
            .where("id", "=", row.id)
            .where("search_key", "=", "")
            .where("user_id", "=", row.user_id)
            .where("first_name", "=", row.first_name)
            .where("last_name", "=", row.last_name)
            .where("email", "=", row.email)
            .executeTakeFirst();
          count += Number(result.numUpdatedRows);
        }
        return count;
      });
    }
    after = rows.at(-1)!.id;
  }
}

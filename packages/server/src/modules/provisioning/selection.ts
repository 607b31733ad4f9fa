import type { Kysely } from "kysely";
import { fail } from "../../errors.js";
import type { Database } from "../../storage/schema.js";
import { whereUserMatches, type UserFilter } from "../users/search.js";

/** Whom a provisioning task is for: named users, a group, or a search. */
export type UserSelection =
  | { userIds: string[] }
  | { group: string }
  | { search: UserFilter };

export interface SelectedUser {
  id: string;
  user_id: string;
  first_name: string;
  last_name: string;
  email: string;
}

const columns = ["users.id", "users.user_id", "users.first_name", "users.last_name", "users.email"] as const;

/** Resolves a selection to users of one virtual server, each once, in user id order. */
export async function selectUsers(db: Kysely<Database>, virtualServerId: string, selection: UserSelection): Promise<SelectedUser[]> {
  let rows: SelectedUser[];
  if ("userIds" in selection) {
    const wanted = [...new Set(selection.userIds)];
    rows = [];
    for (let i = 0; i < wanted.length; i += 1000) {
      rows.push(
        ...(await db
          .selectFrom("users")
          .select(columns)
          .where("virtual_server_id", "=", virtualServerId)
          .where("user_id", "in", wanted.slice(i, i + 1000))
          .execute()),
      );
    }
    if (rows.length !== wanted.length) {
      const found = new Set(rows.map((row) => row.user_id));
      const missing = wanted.filter((userId) => !found.has(userId));
      throw fail("USER_NOT_FOUND", { userId: missing.slice(0, 20).join(", ") }, { userIds: missing });
    }
    rows.sort((a, b) => (a.user_id < b.user_id ? -1 : 1));
  } else {
    const search = "group" in selection ? { group: selection.group } : selection.search;
    const query = whereUserMatches(db.selectFrom("users").select(columns).where("users.virtual_server_id", "=", virtualServerId), search);
    rows = await query.orderBy("users.user_id").execute();
  }
  if (rows.length === 0) throw fail("NO_USERS_SELECTED");
  return rows;
}

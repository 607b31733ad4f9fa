import { sql, type SelectQueryBuilder } from "kysely";
import type { Database } from "../../storage/schema.js";
import { foldForSearch, SEARCH_FIELD_START } from "./user.js";

export interface UserFilter {
  /** Matches the start of the user id, first name, last name or email, in any case. */
  q?: string;
  group?: string;
  hasToken?: boolean;
}

/** The one definition of a user search, for listings and for provisioning selections. */
export function whereUserMatches<O>(query: SelectQueryBuilder<Database, "users", O>, filter: UserFilter): SelectQueryBuilder<Database, "users", O> {
  let result = query;
  if (filter.q) {
    // The start of any field: a separator, then the folded text, anywhere in the key.
    // LIKE's wildcards in the text are escaped. Folding drops control characters, NUL
    // among them, which PostgreSQL text could not hold.
    // A search of control characters alone folds to nothing and finds nobody.
    const folded = foldForSearch(filter.q);
    const pattern = `%${SEARCH_FIELD_START}${folded.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    result = folded === "" ? result.where(sql<boolean>`1 = 0`) : result.where(sql<boolean>`${sql.ref("users.search_key")} like ${pattern} escape '\\'`);
  }
  if (filter.group) {
    const group = filter.group;
    result = result.where((eb) =>
      eb.exists(
        eb.selectFrom("user_groups").select("user_groups.user_pk").whereRef("user_groups.user_pk", "=", "users.id").where("user_groups.group_name", "=", group),
      ),
    );
  }
  if (filter.hasToken !== undefined) {
    const wanted = filter.hasToken;
    result = result.where((eb) => {
      const holding = eb.exists(eb.selectFrom("tokens").select("tokens.serial").whereRef("tokens.user_pk", "=", "users.id"));
      return wanted ? holding : eb.not(holding);
    });
  }
  return result;
}

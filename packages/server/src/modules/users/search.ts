import type { SelectQueryBuilder } from "kysely";
import type { Database } from "../../storage/schema.js";

export interface UserFilter {
  /** Matches the start of the user id, first name, last name or email (case as stored). */
  q?: string;
  group?: string;
  hasToken?: boolean;
}

/** The one definition of a user search, for listings and for provisioning selections. */
export function whereUserMatches<O>(query: SelectQueryBuilder<Database, "users", O>, filter: UserFilter): SelectQueryBuilder<Database, "users", O> {
  let result = query;
  if (filter.q) {
    const prefix = filter.q;
    const upper = `${prefix}\uffff`;
    result = result.where((eb) =>
      eb.or([
        eb.and([eb("users.user_id", ">=", prefix), eb("users.user_id", "<", upper)]),
        eb.and([eb("users.first_name", ">=", prefix), eb("users.first_name", "<", upper)]),
        eb.and([eb("users.last_name", ">=", prefix), eb("users.last_name", "<", upper)]),
        eb.and([eb("users.email", ">=", prefix), eb("users.email", "<", upper)]),
      ]),
    );
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

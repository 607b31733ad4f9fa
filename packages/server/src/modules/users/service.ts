import type { Kysely, Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database, UserRow } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { fillMissingSearchKeys } from "./search-keys.js";
import { whereUserMatches, type UserFilter } from "./search.js";
import { newUserRow, toUser, userSearchKey, type User, type UserInput, type UserUpdate } from "./user.js";

export interface UserSearch extends UserFilter {
  cursor?: string;
  limit: number;
}

export function encodeTextCursor(value: string): string {
  return Buffer.from(value, "utf8").toString("base64url");
}

export function decodeTextCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const value = Buffer.from(cursor, "base64url").toString("utf8");
  if (value.length === 0 || encodeTextCursor(value) !== cursor) throw fail("CURSOR_INVALID");
  return value;
}

async function findUser(db: Kysely<Database>, virtualServerId: string, userId: string): Promise<UserRow> {
  const row = await db
    .selectFrom("users")
    .selectAll()
    .where("virtual_server_id", "=", virtualServerId)
    .where("user_id", "=", userId)
    .executeTakeFirst();
  if (!row) throw fail("USER_NOT_FOUND", { userId });
  return row;
}

async function hydrate(db: Kysely<Database>, rows: UserRow[]): Promise<User[]> {
  if (rows.length === 0) return [];
  const pks = rows.map((row) => row.id);
  const [groups, tokens] = await Promise.all([
    db.selectFrom("user_groups").select(["user_pk", "group_name"]).where("user_pk", "in", pks).orderBy("group_name").execute(),
    db.selectFrom("tokens").select(["user_pk", "serial", "type", "state"]).where("user_pk", "in", pks).orderBy("serial").execute(),
  ]);
  return rows.map((row) =>
    toUser(
      row,
      groups.filter((g) => g.user_pk === row.id).map((g) => g.group_name),
      tokens.filter((t) => t.user_pk === row.id).map(({ serial, type, state }) => ({ serial, type, state })),
    ),
  );
}

async function replaceGroups(trx: Transaction<Database>, user: UserRow, groups: string[]): Promise<void> {
  await trx.deleteFrom("user_groups").where("user_pk", "=", user.id).execute();
  const unique = [...new Set(groups)];
  if (unique.length > 0) {
    await trx
      .insertInto("user_groups")
      .values(unique.map((group_name) => ({ user_pk: user.id, virtual_server_id: user.virtual_server_id, group_name })))
      .execute();
  }
}

/** Called inside the transaction that changed users' groups (provisioning rules listen). */
export type GroupsChanged = (
  trx: Transaction<Database>,
  principal: Principal,
  virtualServerId: string,
  changes: Array<{ userPk: string; joined: string[]; left: string[] }>,
) => Promise<void>;

export function createUserService(deps: Pick<CoreDeps, "db" | "kind" | "clock" | "audit"> & { onGroupsChanged?: GroupsChanged }) {
  const { db, clock, audit } = deps;
  const groupsChanged: GroupsChanged = deps.onGroupsChanged ?? (async () => {});

  return {
    /** Users written without a search key by an older node get theirs (each node, once a minute). */
    fillMissingSearchKeys: (): Promise<number> => fillMissingSearchKeys(db, deps.kind),

    async create(principal: Principal, virtualServerId: string, input: UserInput): Promise<User> {
      return db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, virtualServerId, "users.manage");
        const existing = await trx
          .selectFrom("users")
          .select("id")
          .where("virtual_server_id", "=", virtualServerId)
          .where("user_id", "=", input.userId)
          .executeTakeFirst();
        if (existing) throw fail("USER_EXISTS", { userId: input.userId });
        const now = clock.nowMs();
        const row = newUserRow(virtualServerId, input, now);
        await trx.insertInto("users").values(row).execute();
        await replaceGroups(trx, row, input.groups);
        await groupsChanged(trx, principal, virtualServerId, [{ userPk: row.id, joined: [...new Set(input.groups)], left: [] }]);
        await audit.append(trx, principal, [
          { action: "user.create", virtualServerId, targetType: "user", targetId: row.user_id, userPk: row.id },
        ]);
        return toUser(row, [...new Set(input.groups)].sort(), []);
      });
    },

    async get(principal: Principal, virtualServerId: string, userId: string): Promise<User> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "users.read");
      const [user] = await hydrate(db, [await findUser(db, virtualServerId, userId)]);
      return user!;
    },

    async update(principal: Principal, virtualServerId: string, userId: string, input: UserUpdate): Promise<User> {
      await db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, virtualServerId, "users.manage");
        const row = await findUser(trx, virtualServerId, userId);
        const fields = { user_id: row.user_id, first_name: input.firstName ?? row.first_name, last_name: input.lastName ?? row.last_name, email: input.email ?? row.email };
        const next = { first_name: fields.first_name, last_name: fields.last_name, email: fields.email, search_key: userSearchKey(fields), updated_at: clock.nowMs() };
        await trx.updateTable("users").set(next).where("id", "=", row.id).execute();
        if (input.groups) {
          const before = (await trx.selectFrom("user_groups").select("group_name").where("user_pk", "=", row.id).execute()).map((g) => g.group_name);
          await replaceGroups(trx, row, input.groups);
          const after = new Set(input.groups);
          await groupsChanged(trx, principal, virtualServerId, [
            { userPk: row.id, joined: [...after].filter((g) => !before.includes(g)), left: before.filter((g) => !after.has(g)) },
          ]);
        }
        await audit.append(trx, principal, [
          {
            action: "user.update",
            virtualServerId,
            targetType: "user",
            targetId: userId,
            userPk: row.id,
            details: { changed: Object.keys(input) },
          },
        ]);
      });
      return this.get(principal, virtualServerId, userId);
    },

    async delete(principal: Principal, virtualServerId: string, userId: string): Promise<void> {
      await db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, virtualServerId, "users.manage");
        const row = await findUser(trx, virtualServerId, userId);
        // Leaving every group first returns the tokens rules gave; other tokens still block.
        const groups = (await trx.selectFrom("user_groups").select("group_name").where("user_pk", "=", row.id).execute()).map((g) => g.group_name);
        await groupsChanged(trx, principal, virtualServerId, [{ userPk: row.id, joined: [], left: groups }]);
        const held = await trx
          .selectFrom("tokens")
          .select((eb) => eb.fn.countAll<number>().as("count"))
          .where("user_pk", "=", row.id)
          .executeTakeFirstOrThrow();
        if (Number(held.count) > 0) throw fail("USER_HAS_TOKENS", { userId, count: Number(held.count) });
        await trx.deleteFrom("user_groups").where("user_pk", "=", row.id).execute();
        await trx.deleteFrom("users").where("id", "=", row.id).execute();
        await audit.append(trx, principal, [
          { action: "user.delete", virtualServerId, targetType: "user", targetId: userId, userPk: row.id },
        ]);
      });
    },

    async list(principal: Principal, virtualServerId: string, search: UserSearch): Promise<{ items: User[]; nextCursor: string | null }> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "users.read");
      const after = decodeTextCursor(search.cursor);
      let query = db.selectFrom("users").selectAll("users").where("users.virtual_server_id", "=", virtualServerId);
      if (after !== undefined) query = query.where("users.user_id", ">", after);
      query = whereUserMatches(query, search);
      const rows = await query.orderBy("users.user_id").limit(search.limit + 1).execute();
      const page = rows.slice(0, search.limit);
      return {
        items: await hydrate(db, page),
        nextCursor: rows.length > search.limit ? encodeTextCursor(page.at(-1)!.user_id) : null,
      };
    },

    async listGroups(principal: Principal, virtualServerId: string): Promise<Array<{ name: string; members: number }>> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "users.read");
      const rows = await db
        .selectFrom("user_groups")
        .select((eb) => ["group_name", eb.fn.countAll<number>().as("members")])
        .where("virtual_server_id", "=", virtualServerId)
        .groupBy("group_name")
        .orderBy("group_name")
        .execute();
      return rows.map((row) => ({ name: row.group_name, members: Number(row.members) }));
    },
  };
}

export type UserService = ReturnType<typeof createUserService>;

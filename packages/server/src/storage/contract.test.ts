import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { installerPrincipal } from "../modules/operators/access.js";
import { reserveSerials } from "../modules/tokens/serial.js";
import { verifyAuditChain } from "../modules/audit/service.js";
import { createTestCore, createTestDatabase, describeEachDatabase, type TestCore } from "../testing/databases.js";
import { createTenant } from "../testing/fixtures.js";
import { openStorage } from "./database.js";
import { createMigrator, isMigrated, migrateToLatest } from "./migrate.js";

// The storage contract: what the services rely on from a database, run unchanged on
// SQLite and PostgreSQL.
describeEachDatabase("storage contract", (kind) => {
  let core: TestCore;
  beforeAll(async () => {
    core = await createTestCore(kind);
  });
  afterAll(async () => core.close());

  it("applies every migration and reports itself ready; applying again changes nothing", async () => {
    expect(await isMigrated(core.storage)).toBe(true);
    expect((await migrateToLatest(core.storage)).applied).toEqual([]);
  });

  it("gives users who were there before the case-insensitive search their search keys (migration 007)", async () => {
    const database = await createTestDatabase(kind);
    const storage = openStorage(database.target);
    try {
      const { error } = await createMigrator(storage).migrateTo("006-guessing-limits");
      expect(error).toBeUndefined();
      const before = storage.db as unknown as Kysely<Record<string, Record<string, unknown>>>;
      await before.insertInto("virtual_servers").values({ id: "vs_old", name: "Old", parent_id: null, path: "/old/", created_at: 0, updated_at: 0 }).execute();
      const old = Array.from({ length: 1500 }, (_, i) => ({ id: `usr_${String(i).padStart(5, "0")}`, virtual_server_id: "vs_old", user_id: `old-${i}`, first_name: i === 1234 ? "Ørjan" : "", last_name: "Old", email: "", created_at: 0, updated_at: 0 }));
      for (let i = 0; i < old.length; i += 500) await before.insertInto("users").values(old.slice(i, i + 500)).execute();
      expect((await migrateToLatest(storage)).applied).toEqual(["007-user-search", "008-unkeyed-users", "009-challenge-redemption", "010-push-timeout", "011-audit-pending", "012-challenges-by-user", "013-ended-push-owed", "014-wake-push-owed", "015-wake-owed-devices"]);
      const keys = await storage.db.selectFrom("users").select(["user_id", "search_key"]).where("virtual_server_id", "=", "vs_old").execute();
      expect(keys).toHaveLength(1500);
      expect(keys.filter((row) => row.search_key === "")).toEqual([]);
      expect(keys.find((row) => row.user_id === "old-1234")?.search_key).toBe("\u001fold-1234\u001førjan\u001fold\u001f");
    } finally {
      await storage.close();
      await database.drop();
    }
  });

  it("gives applications that were there before push timeouts the default minute (migration 010)", async () => {
    const database = await createTestDatabase(kind);
    const storage = openStorage(database.target);
    try {
      expect((await createMigrator(storage).migrateTo("009-challenge-redemption")).error).toBeUndefined();
      const before = storage.db as unknown as Kysely<Record<string, Record<string, unknown>>>;
      await before.insertInto("virtual_servers").values({ id: "vs_old", name: "Old", parent_id: null, path: "/old/", created_at: 0, updated_at: 0 }).execute();
      await before
        .insertInto("applications")
        .values({ id: "app_old", virtual_server_id: "vs_old", name: "vpn", kind: "radius", resource_name: "vpn", push_otp: 1, push_mode: "hold", radius_addresses: "[]", created_at: 0, updated_at: 0 })
        .execute();
      expect((await migrateToLatest(storage)).applied).toEqual(["010-push-timeout", "011-audit-pending", "012-challenges-by-user", "013-ended-push-owed", "014-wake-push-owed", "015-wake-owed-devices"]);
      expect(await storage.db.selectFrom("applications").select(["id", "push_timeout_seconds"]).execute()).toEqual([{ id: "app_old", push_timeout_seconds: 60 }]);
    } finally {
      await storage.close();
      await database.drop();
    }
  });

  it("gives users an older node wrote without a search key theirs, and leaves the others alone", async () => {
    const { db } = core.storage;
    const tenant = await createTenant(core.services, "rolling");
    const found = (q: string) => core.services.users.list(installerPrincipal, tenant.virtualServerId, { q, limit: 50 }).then((page) => page.items.map((user) => user.userId));
    await core.services.users.create(installerPrincipal, tenant.virtualServerId, { userId: "new-node", firstName: "Åsa", lastName: "New", email: "", groups: [] });
    // As a node of the version before migration 007 writes users: the column's default.
    const old = Array.from({ length: 1200 }, (_, i) => ({ id: `usr_rolling_${String(i).padStart(5, "0")}`, virtual_server_id: tenant.virtualServerId, user_id: `Old-${i}`, first_name: i === 7 ? "Ørjan" : "", last_name: "Old", email: "", created_at: 0, updated_at: 0 }));
    const olderNode = db as unknown as Kysely<Record<string, Record<string, unknown>>>;
    for (let i = 0; i < old.length; i += 400) await olderNode.insertInto("users").values(old.slice(i, i + 400)).execute();
    const keyBefore = await db.selectFrom("users").select("search_key").where("user_id", "=", "new-node").executeTakeFirstOrThrow();
    expect(await found("ørjan")).toEqual([]);

    expect(await core.services.users.fillMissingSearchKeys()).toBe(1200);
    expect(await found("ørjan")).toEqual(["Old-7"]);
    const elevens = await found("old-11");
    expect(elevens).toHaveLength(50);
    expect(elevens).toContain("Old-11");
    expect(elevens.every((userId) => userId.startsWith("Old-11"))).toBe(true);
    expect(await db.selectFrom("users").select("search_key").where("user_id", "=", "new-node").executeTakeFirstOrThrow()).toEqual(keyBefore);
    expect(await db.selectFrom("users").select("id").where("search_key", "=", "").execute()).toEqual([]);
    expect(await core.services.users.fillMissingSearchKeys()).toBe(0);
  });

  it("finds users without a search key through their partial index, not by reading every user", async () => {
    const query = sql`select id from users where search_key = '' and id > '' order by id limit 500`;
    const plan =
      kind === "sqlite"
        ? (await sql<{ detail: string }>`explain query plan ${query}`.execute(core.storage.db)).rows.map((row) => row.detail)
        : await core.storage.db.transaction().execute(async (trx) => {
            // The test tables are small enough for a sequential scan to win; forbid it to see that the index serves.
            await sql`set local enable_seqscan = off`.execute(trx);
            return (await sql<{ "QUERY PLAN": string }>`explain ${query}`.execute(trx)).rows.map((row) => row["QUERY PLAN"]);
          });
    expect(plan.join("; ")).toContain("users_unkeyed");
  });

  it("returns 64-bit times and counters as numbers", async () => {
    const { db } = core.storage;
    const tenant = await createTenant(core.services, "numbers");
    const row = await db.selectFrom("virtual_servers").selectAll().where("id", "=", tenant.virtualServerId).executeTakeFirstOrThrow();
    expect(typeof row.created_at).toBe("number");
    expect(row.created_at).toBe(core.clock.nowMs());
    const big = 2 ** 52 + 1;
    await db.insertInto("serial_counters").values({ prefix: "ZZ", next_value: big }).execute();
    const counter = await db.selectFrom("serial_counters").selectAll().where("prefix", "=", "ZZ").executeTakeFirstOrThrow();
    expect(counter.next_value).toBe(big);
  });

  it("compares serials bytewise, so prefix ranges find exactly the serials with that prefix", async () => {
    const { db } = core.storage;
    const tenant = await createTenant(core.services, "collation");
    const seeds = ["ab-1", "AB-2", "ab_3", "ab.4", "abc", "b"].map((serial) => ({
      serial,
      secret: Buffer.alloc(20, 3),
      otpMode: "totp" as const,
      digits: 6 as const,
      periodSeconds: 30,
      algorithm: "SHA1" as const,
      counter: 0,
    }));
    await core.services.tokens.importSeeds(installerPrincipal, { virtualServerId: tenant.virtualServerId, seeds });
    const ordered = await db.selectFrom("tokens").select("serial").where("virtual_server_id", "=", tenant.virtualServerId).orderBy("serial").execute();
    expect(ordered.map((row) => row.serial)).toEqual(["AB-2", "ab-1", "ab.4", "ab_3", "abc", "b"]);
    const page = await core.services.tokens.list(installerPrincipal, { virtualServerId: tenant.virtualServerId, serialPrefix: "ab", limit: 10 });
    expect(page.items.map((token) => token.serial)).toEqual(["ab-1", "ab.4", "ab_3", "abc"]);
  });

  it("refuses a second token with the same serial and a second user with the same id in one virtual server", async () => {
    const { db } = core.storage;
    const tenant = await createTenant(core.services, "unique");
    const { serials } = await core.services.tokens.add(installerPrincipal, { virtualServerId: tenant.virtualServerId, type: "mobile", count: 1 });
    const row = await db.selectFrom("tokens").selectAll().where("serial", "=", serials[0]!).executeTakeFirstOrThrow();
    await expect(db.insertInto("tokens").values({ ...row }).execute()).rejects.toThrow();
    await core.services.users.create(installerPrincipal, tenant.virtualServerId, { userId: "same", firstName: "", lastName: "", email: "", groups: [] });
    const user = await db.selectFrom("users").selectAll().where("user_id", "=", "same").executeTakeFirstOrThrow();
    await expect(db.insertInto("users").values({ ...user, id: "usr_other" }).execute()).rejects.toThrow();
  });

  it("keeps the audit trail append-only in the database itself", async () => {
    const { db } = core.storage;
    await createTenant(core.services, "append-only");
    await expect(db.updateTable("audit_log").set({ reason: "rewritten" }).where("seq", "=", 1).execute()).rejects.toThrow(/append-only/);
    await expect(db.deleteFrom("audit_log").where("seq", "=", 1).execute()).rejects.toThrow(/append-only/);
  });

  it("rolls a failed transaction back whole", async () => {
    const { db } = core.storage;
    const before = await db.selectFrom("virtual_servers").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    await expect(
      db.transaction().execute(async (trx) => {
        await trx
          .insertInto("virtual_servers")
          .values({ id: "vs_rollback", name: "rollback", parent_id: null, path: "/vs_rollback/", capacity: null, created_at: 1, updated_at: 1 })
          .execute();
        throw new Error("crash in the middle");
      }),
    ).rejects.toThrow("crash in the middle");
    const after = await db.selectFrom("virtual_servers").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });

  it("hands out distinct serial numbers to concurrent transactions", async () => {
    const { db } = core.storage;
    const batches = await Promise.all(
      Array.from({ length: 8 }, () => db.transaction().execute((trx) => reserveSerials(trx, "email", 25))),
    );
    const all = batches.flat();
    expect(new Set(all).size).toBe(200);
  });

  it("keeps the audit chain linear when many transactions append at once", async () => {
    const tenant = await createTenant(core.services, "chain");
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        core.services.users.create(tenant.principals.admin, tenant.virtualServerId, {
          userId: `chain-${i}`,
          firstName: "",
          lastName: "",
          email: "",
          groups: [],
        }),
      ),
    );
    const verdict = await verifyAuditChain(core.storage.db);
    expect(verdict.ok).toBe(true);
  });

  it("cascades a deleted token's device record", async () => {
    const { db } = core.storage;
    const tenant = await createTenant(core.services, "cascade");
    const { serials } = await core.services.tokens.add(installerPrincipal, { virtualServerId: tenant.virtualServerId, type: "mobile", count: 1 });
    const serial = serials[0]!;
    await db
      .insertInto("devices")
      .values({ token_serial: serial, app: "tessera", target: null, device_type: null, app_version: null, push_at_enrollment: "enabled", push_now: "enabled", enrolled_at: 1, updated_at: 1 })
      .execute();
    await db.deleteFrom("tokens").where("serial", "=", serial).execute();
    expect(await db.selectFrom("devices").selectAll().where("token_serial", "=", serial).execute()).toEqual([]);
  });

  it("answers a plain query through the raw sql helper", async () => {
    const result = await sql<{ one: number }>`select 1 as one`.execute(core.storage.db);
    expect(Number(result.rows[0]!.one)).toBe(1);
  });
});

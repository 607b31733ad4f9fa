import { sql, type Transaction } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { verifyAuditChain } from "../modules/audit/service.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../testing/databases.js";
import { openStorage } from "./database.js";
import { prepareQuery } from "./prepared.js";
import type { Database } from "./schema.js";
import { createWriteBatcher } from "./write-batch.js";

describeEachDatabase("group commit and prepared queries", (kind) => {
  let core: TestCore;
  beforeAll(async () => {
    core = await createTestCore(kind);
  });
  afterAll(async () => core.close());

  const counterOf = (prefix: string) => core.storage.db.selectFrom("serial_counters").select("next_value").where("prefix", "=", prefix).executeTakeFirst();

  it("runs work that arrives together in one transaction, one piece after another, each seeing the ones before", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db);
    await db.insertInto("serial_counters").values({ prefix: "GC", next_value: 0 }).execute();
    const transactions = new Set<Transaction<Database>>();
    const increments = Array.from({ length: 20 }, () =>
      writes.run(async (trx) => {
        transactions.add(trx);
        const row = await trx.selectFrom("serial_counters").select("next_value").where("prefix", "=", "GC").executeTakeFirstOrThrow();
        await trx.updateTable("serial_counters").set({ next_value: row.next_value + 1 }).where("prefix", "=", "GC").execute();
        return row.next_value;
      }),
    );
    // Each saw its predecessors' writes: no two read the same value.
    expect((await Promise.all(increments)).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, index) => index));
    expect(transactions.size).toBe(1);
    expect((await counterOf("GC"))?.next_value).toBe(20);
  });

  it("keeps one piece's failure its own: the others commit, the failed one changes nothing", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db);
    const insert = (prefix: string) => writes.run((trx) => trx.insertInto("serial_counters").values({ prefix, next_value: 1 }).execute());
    const failing = writes.run(async (trx) => {
      await trx.insertInto("serial_counters").values({ prefix: "F1", next_value: 1 }).execute();
      throw new Error("this piece fails");
    });
    const outcomes = await Promise.allSettled([insert("OK1"), failing, insert("OK2")]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(await counterOf("OK1")).toBeDefined();
    expect(await counterOf("OK2")).toBeDefined();
    expect(await counterOf("F1")).toBeUndefined();
  });

  it("undoes what the pieces of a rolled-back batch asked, latest first, before they run again", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db);
    const log: string[] = [];
    const piece = (name: string, fails = false) =>
      writes.run(async (_trx, scope) => {
        log.push(`do ${name}`);
        scope.onRollback(() => log.push(`undo ${name}`));
        if (fails) throw new Error(`${name} fails`);
      });
    const outcomes = await Promise.allSettled([piece("a"), piece("b"), piece("c", true)]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "fulfilled", "rejected"]);
    // The batch ran a, b and c, rolled back and undid c, b, a; then each ran alone, and
    // only c (failing again) was undone.
    expect(log).toEqual(["do a", "do b", "do c", "undo c", "undo b", "undo a", "do a", "do b", "do c", "undo c"]);
  });

  it("puts at most maxBatch pieces in a transaction: the rest, and work that arrives meanwhile, form the next", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db, { maxBatch: 4 });
    const seen: Array<Transaction<Database>> = [];
    const pieces = Array.from({ length: 10 }, (_, index) =>
      writes.run(async (trx) => {
        seen.push(trx);
        await trx.insertInto("serial_counters").values({ prefix: `MB${index}`, next_value: index }).execute();
        return index;
      }),
    );
    expect(await Promise.all(pieces)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // At most four to a transaction: 4 + 4 + 2.
    expect(new Set(seen).size).toBe(3);
    const rows = await db.selectFrom("serial_counters").select("prefix").where("prefix", "like", "MB%").execute();
    expect(rows).toHaveLength(10);
  });

  it("settles a piece only once another connection can see what it wrote", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db);
    const observer = openStorage(core.database.target);
    try {
      const seenOnSettle = await Promise.all(
        ["VIS1", "VIS2", "VIS3"].map(async (prefix) => {
          await writes.run((trx) => trx.insertInto("serial_counters").values({ prefix, next_value: 1 }).execute());
          return (await observer.db.selectFrom("serial_counters").select("prefix").where("prefix", "=", prefix).executeTakeFirst())?.prefix;
        }),
      );
      expect(seenOnSettle).toEqual(["VIS1", "VIS2", "VIS3"]);
    } finally {
      await observer.close();
    }
  });

  it("keeps the audit chain whole when pieces that append share a batch and one of them fails", async () => {
    const { db } = core.storage;
    const writes = createWriteBatcher(db);
    await core.services.audit.settle();
    const before = await db.selectFrom("audit_log").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    const append = (n: number, fails = false) =>
      writes.run(async (trx) => {
        await core.services.audit.append(trx, installerPrincipal, [{ action: "test.batch", targetType: "keyring", targetId: String(n) }]);
        if (fails) throw new Error("this piece fails after appending");
      });
    const outcomes = await Promise.allSettled([append(1), append(2), append(3, true), append(4)]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    await core.services.audit.settle();
    const after = await db.selectFrom("audit_log").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    expect(Number(after.n) - Number(before.n)).toBe(3);
    expect(await verifyAuditChain(db)).toMatchObject({ ok: true });
  });

  it("runs nothing again when the commit itself fails: every piece fails with it", async () => {
    const { db } = core.storage;
    // A foreign key checked only at commit: the batch's last piece breaks it.
    await sql`create table batch_parent (id integer primary key)`.execute(db);
    await sql`create table batch_child (id integer primary key, parent integer references batch_parent (id) deferrable initially deferred)`.execute(db);
    const writes = createWriteBatcher(db);
    const runs = [0, 0, 0];
    const piece = (index: number, parent: number) =>
      writes.run(async (trx) => {
        runs[index]! += 1;
        await sql`insert into batch_child (id, parent) values (${index + 1}, ${parent})`.execute(trx);
      });
    await db.executeQuery(sql`insert into batch_parent (id) values (1)`.compile(db));
    const outcomes = await Promise.allSettled([piece(0, 1), piece(1, 1), piece(2, 99)]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(runs).toEqual([1, 1, 1]);
    expect((await sql<{ n: number }>`select count(*) as n from batch_child`.execute(db)).rows[0]?.n).toBe(0);
  });

  it("runs a prepared query with new values each time, keeping the constants written into it", async () => {
    const { db } = core.storage;
    await db.insertInto("serial_counters").values([{ prefix: "PQ1", next_value: 7 }, { prefix: "PQ2", next_value: 9 }]).execute();
    const byPrefix = prepareQuery<{ prefix: string }, { prefix: string; next_value: number }>(db, (db, param) =>
      db.selectFrom("serial_counters").select(["prefix", "next_value"]).where("prefix", "=", param("prefix")).where("next_value", ">", 0),
    );
    expect((await db.executeQuery(byPrefix({ prefix: "PQ1" }))).rows).toEqual([{ prefix: "PQ1", next_value: 7 }]);
    expect((await db.executeQuery(byPrefix({ prefix: "PQ2" }))).rows).toEqual([{ prefix: "PQ2", next_value: 9 }]);
    expect(() => byPrefix({} as { prefix: string })).toThrow(/no value for prefix/);
  });
});

import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestCore, describeEachDatabase, openSecondNode, type TestCore } from "../../testing/databases.js";
import { installerPrincipal } from "../operators/access.js";
import type { Services } from "../../core.js";
import { verifyAuditChain } from "./service.js";

describeEachDatabase("audit chain", (kind) => {
  let core: TestCore;
  beforeAll(async () => {
    core = await createTestCore(kind);
  });
  afterAll(async () => core.close());

  const appendIn = (services: Services, action: string, targetId: string, fails = false) =>
    services.storage.db.transaction().execute(async (trx) => {
      await services.audit.append(trx, installerPrincipal, [{ action, targetType: "keyring", targetId }]);
      if (fails) throw new Error("this transaction fails after appending");
    });

  const recordsOf = async (action: string) =>
    (await core.storage.db.selectFrom("audit_log").select("target_id").where("action", "=", action).orderBy("seq").execute()).map((row) => row.target_id);

  it("links the records two nodes write side by side, each once, and none of a transaction that rolled back", async () => {
    const second = await openSecondNode(core);
    try {
      // Two SQLite connections in one process cannot interleave transactions (one would
      // wait for the write lock and block the thread): there, one node writes.
      const nodes = kind === "postgres" ? [core.services, second.services] : [core.services];
      const outcomes = await Promise.allSettled(Array.from({ length: 120 }, (_, n) => appendIn(nodes[n % nodes.length]!, "test.side", String(n), n % 5 === 4)));
      expect(outcomes.filter((outcome) => outcome.status === "rejected")).toHaveLength(24);
      await Promise.all(nodes.map((services) => services.audit.settle()));
      const kept = await recordsOf("test.side");
      const committed = Array.from({ length: 120 }, (_, n) => n)
        .filter((n) => n % 5 !== 4)
        .map(String);
      expect([...kept].sort()).toEqual([...committed].sort());
      expect(await verifyAuditChain(core.storage.db)).toMatchObject({ ok: true });
      expect(await core.storage.db.selectFrom("audit_pending").select("id").execute()).toEqual([]);
    } finally {
      await second.close();
    }
  });

  it("links what a node left on closing, so nothing waits for a node that is gone", async () => {
    const second = await openSecondNode(core);
    await appendIn(second.services, "test.closing", "last words");
    await second.close();
    expect(await recordsOf("test.closing")).toEqual(["last words"]);
  });

  if (kind !== "postgres") return;

  it("lets a writer commit while another node extends the chain, and links its record once the chain is free", async () => {
    const holder = new pg.Client({ connectionString: (core.database.target as { url: string }).url });
    await holder.connect();
    try {
      // Another node in the middle of a pass: the chain's lock is held.
      await holder.query("begin");
      await holder.query("select pg_advisory_xact_lock(7211001)");
      // The writer commits without it (the chain's lock was once taken by every writer until its commit).
      await appendIn(core.services, "test.unblocked", "written");
      expect(await core.storage.db.selectFrom("audit_pending").select("action").where("action", "=", "test.unblocked").execute()).toHaveLength(1);
      let settled = false;
      const settling = core.services.audit.settle().then(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(settled).toBe(false);
      await holder.query("commit");
      await settling;
      expect(await recordsOf("test.unblocked")).toEqual(["written"]);
    } finally {
      await holder.end();
    }
  });

  it("links, unasked, the records a process left waiting when it was killed", async () => {
    // What a killed CLI leaves: a committed record that nobody linked.
    await sql`insert into audit_pending (at, actor, action, target_type, target_id) values (${core.clock.nowMs()}, 'installer', 'test.orphan', 'keyring', 'left behind')`.execute(core.storage.db);
    // The running node looks every two seconds.
    for (let tries = 0; tries < 100 && (await recordsOf("test.orphan")).length === 0; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await recordsOf("test.orphan")).toEqual(["left behind"]);
    expect(await verifyAuditChain(core.storage.db)).toMatchObject({ ok: true });
  });

  it("keeps records it could not link where they wait, counts the failure, and links them on a later pass", async () => {
    // A chain that refuses one record, as a full disk or a broken constraint would.
    await sql`alter table audit_log add constraint refuse_poison check (action <> 'test.poison')`.execute(core.storage.db);
    try {
      await appendIn(core.services, "test.poison", "waits");
      await expect(core.services.audit.settle()).rejects.toThrow(/refuse_poison/);
      expect(await core.storage.db.selectFrom("audit_pending").select("action").execute()).toEqual([{ action: "test.poison" }]);
      expect((await core.services.metrics.render()).body).toMatch(/tessera_audit_link_passes_total\{outcome="failed"\} [1-9]/);
    } finally {
      await sql`alter table audit_log drop constraint refuse_poison`.execute(core.storage.db);
    }
    await core.services.audit.settle();
    expect(await recordsOf("test.poison")).toEqual(["waits"]);
    expect((await core.services.metrics.render()).body).toMatch(/tessera_audit_linked_records_total [1-9]/);
    expect(await verifyAuditChain(core.storage.db)).toMatchObject({ ok: true });
  });
});

import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { cliEnvironment, tessera, tesseraJson } from "../testing/cli.js";
import { createTestDatabase, describeEachDatabase, type TestDatabase } from "../testing/databases.js";

describeEachDatabase("tessera provisioning commands", (kind) => {
  let database: TestDatabase;
  let env: NodeJS.ProcessEnv;
  beforeEach(async () => {
    database = await createTestDatabase(kind);
    env = cliEnvironment(database, { TESSERA_PUBLIC_URL: "https://mfa.example.com" });
  });
  afterEach(async () => database.drop());

  it("provisions a group as one task, shows where each user stands, and keeps the links in the outbox without SMTP", async () => {
    const { virtualServerId } = await tesseraJson<{ virtualServerId: string }>(["bootstrap", "--name", "Acme"], env);
    const csv = path.join(database.dataDir, "people.csv");
    writeFileSync(csv, "userId,firstName,email,groups\nann,Ann,ann@example.test,vpn\nbob,Bob,bob@example.test,vpn\ncid,Cid,cid@example.test,staff\n");
    await tesseraJson(["users", "import", csv, "--vs", "Acme"], env);
    await tesseraJson(["tokens", "add", "--vs", "Acme", "--type", "mobile", "--count", "2"], env);

    const refused = await tessera(["provision", "--vs", "Acme"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: say whom/);

    const task = await tesseraJson<{ id: string; counts: { total: number; pending: number } }>(["provision", "--vs", "Acme", "--group", "vpn", "--type", "mobile"], env);
    expect(task.counts).toMatchObject({ total: 2, pending: 2 });
    const shown = await tesseraJson<{ users: Array<{ userId: string; state: string }> }>(["tasks", "show", task.id], env);
    expect(shown.users.map((u) => [u.userId, u.state])).toEqual([["ann", "pending"], ["bob", "pending"]]);

    const outbox = await tesseraJson<{ items: Array<{ to: string; enrollUrl: string | null }> }>(["mail", "outbox", "--vs", virtualServerId], env);
    expect(outbox.items.map((m) => m.to).sort()).toEqual(["ann@example.test", "bob@example.test"]);
    for (const mail of outbox.items) expect(mail.enrollUrl).toMatch(/^https:\/\/mfa\.example\.com\/enroll\/[A-Z2-7]{26}$/);

    const short = await tessera(["provision", "--vs", "Acme", "--users", "cid", "--json"], env);
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/^error INVENTORY_SHORT/);

    const cancelled = await tesseraJson<{ status: string; counts: { cancelled: number } }>(["tasks", "cancel", task.id], env);
    expect(cancelled).toMatchObject({ status: "cancelled", counts: { cancelled: 2 } });
    const plan = await tesseraJson<{ total: number }>(["migration", "plan", "--vs", "Acme"], env);
    expect(plan.total).toBe(0);
  });
});

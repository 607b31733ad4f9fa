import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestApp } from "../../http/testing-app.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { simulatedDevice } from "../../testing/device.js";
import { createTenant, placeTokenInState, type TestTenant } from "../../testing/fixtures.js";
import { installerPrincipal } from "../operators/access.js";
import { hashEnrollmentCode, newEnrollmentCode } from "./codes.js";

describeEachDatabase("provisioning rules and the migration to the tessera app", (kind) => {
  let core: TestCore;
  let api: Awaited<ReturnType<typeof createTestApp>>;
  beforeAll(async () => {
    core = await createTestCore(kind);
    api = await createTestApp(core);
  });
  afterAll(async () => {
    await api.close();
    await core.close();
  });

  const tokensOf = async (t: TestTenant, userId: string) =>
    (await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&userId=${userId}`, t.apiKeys.auditor)).json.items as Array<{ serial: string; state: string; device: { app: string } | null }>;

  it("provisions group members when the rule is made and when users join, and revokes to inventory when they leave", async () => {
    const t = await createTenant(core.services, "Rules");
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 5 });
    const users = `/api/v1/virtual-servers/${t.virtualServerId}/users`;
    await api.call("POST", users, t.apiKeys.operator, { userId: "early", email: "early@example.test", groups: ["vpn"] });
    await api.call("POST", users, t.apiKeys.operator, { userId: "other", email: "other@example.test", groups: ["staff"] });
    const rule = await api.call("POST", "/api/v1/provisioning/rules", t.apiKeys.operator, { virtualServerId: t.virtualServerId, group: "vpn", tokenType: "mobile" });
    expect(rule.status).toBe(201);
    expect((await tokensOf(t, "early")).map((x) => x.state)).toEqual(["assigned"]);
    expect(await tokensOf(t, "other")).toEqual([]);
    const again = await api.call("POST", "/api/v1/provisioning/rules", t.apiKeys.operator, { virtualServerId: t.virtualServerId, group: "vpn", tokenType: "mobile" });
    expect(again.json.error.code).toBe("RULE_EXISTS");

    // Joining the group through an update, and through an import.
    await api.call("PATCH", `${users}/other`, t.apiKeys.operator, { groups: ["staff", "vpn"] });
    expect((await tokensOf(t, "other")).map((x) => x.state)).toEqual(["assigned"]);
    await api.call("POST", `${users}/import`, t.apiKeys.operator, { csv: "userId,email,groups\nimported,imported@example.test,vpn;staff\n" });
    expect((await tokensOf(t, "imported")).map((x) => x.state)).toEqual(["assigned"]);

    // An enrolled token goes back to inventory when its user leaves the group.
    const held = (await tokensOf(t, "early"))[0]!.serial;
    await core.storage.db.updateTable("tokens").set({ state: "active" }).where("serial", "=", held).execute();
    await api.call("PATCH", `${users}/early`, t.apiKeys.operator, { groups: [] });
    expect(await tokensOf(t, "early")).toEqual([]);
    const back = await api.call("GET", `/api/v1/tokens/${held}`, t.apiKeys.auditor);
    expect(back.json).toMatchObject({ state: "inventory", user: null, hasKey: false });

    // Deleting a user leaves every group first: the rule's token goes back, and the delete succeeds.
    expect((await api.call("DELETE", `${users}/other`, t.apiKeys.operator)).status).toBe(204);
  });

  it("skips a rule that cannot provision, audits the skip, and still applies the change of groups", async () => {
    const t = await createTenant(core.services, "Rules short");
    await api.call("POST", "/api/v1/provisioning/rules", t.apiKeys.operator, { virtualServerId: t.virtualServerId, group: "vpn", tokenType: "mobile" });
    const created = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users`, t.apiKeys.operator, { userId: "nobody-left", email: "n@example.test", groups: ["vpn"] });
    expect(created.status).toBe(201);
    const skips = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=provisioning.rule_skipped`, t.apiKeys.admin);
    expect(skips.json.items[0].details).toMatchObject({ code: "INVENTORY_SHORT", users: 1 });
  });

  it("plans, starts and completes a migration from a generic OTP app, then retires the old tokens for reuse", async () => {
    const t = await createTenant(core.services, "Migrating");
    const db = core.storage.db;
    const userIds = ["m1", "m2", "m3"];
    const oldSerials: string[] = [];
    for (const userId of userIds) {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId });
      await db.updateTable("devices").set({ app: "otp-app", push_at_enrollment: "not_applicable", push_now: "not_applicable", target: "Android 13" }).where("token_serial", "=", serial).execute();
      await db.updateTable("users").set({ email: `${userId}@example.test` }).where("user_id", "=", userId).execute();
      oldSerials.push(serial);
    }
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 3 });

    const plan = await api.call("GET", `/api/v1/virtual-servers/${t.virtualServerId}/migration`, t.apiKeys.auditor);
    expect(plan.json).toMatchObject({ total: 3, notStarted: 3, provisioned: 0, moved: 0 });

    const started = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/migration/start`, t.apiKeys.operator, {});
    expect(started.json.task).toMatchObject({ kind: "migration", apps: ["tessera"], counts: { total: 3, pending: 3 } });
    const secondStart = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/migration/start`, t.apiKeys.operator, {});
    expect(secondStart.json.task).toBeNull();

    // Two of the three enroll their new token in the tessera app (codes replaced here
    // by known ones, as if read from their mail).
    for (const userId of ["m1", "m2"]) {
      const code = newEnrollmentCode();
      const user = await db.selectFrom("users").select("id").where("user_id", "=", userId).where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
      await db.updateTable("enrollments").set({ code_hash: hashEnrollmentCode(code) }).where("user_pk", "=", user.id).where("status", "=", "pending").execute();
      const device = await simulatedDevice(api, () => core.clock.nowMs());
      const enrolled = await device.enroll(code, true);
      expect((await device.confirm(enrolled.json.enrollmentId, device.passcode())).status).toBe(200);
    }
    const progress = await api.call("GET", `/api/v1/virtual-servers/${t.virtualServerId}/migration`, t.apiKeys.auditor);
    expect(progress.json).toMatchObject({ total: 3, provisioned: 1, moved: 2 });

    const retired = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/migration/retire`, t.apiKeys.operator);
    expect(retired.json).toMatchObject({ retired: 2, retiredEver: 2, reusedSince: 0 });
    expect(retired.json.serials.sort()).toEqual([oldSerials[0], oldSerials[1]].sort());
    for (const serial of retired.json.serials as string[]) {
      expect((await api.call("GET", `/api/v1/tokens/${serial}`, t.apiKeys.auditor)).json).toMatchObject({ state: "inventory", user: null, device: null, stateReason: "migrated to the tessera app" });
    }
    const after = await api.call("GET", `/api/v1/virtual-servers/${t.virtualServerId}/migration`, t.apiKeys.auditor);
    expect(after.json).toMatchObject({ total: 1, provisioned: 1 });

    // A retired token is provisioned to the next user, and the report counts the reuse.
    await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users`, t.apiKeys.operator, { userId: "newcomer", email: "new@example.test" });
    await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users/newcomer/provision`, t.apiKeys.operator, { tokenType: "mobile" });
    const reused = (await tokensOf(t, "newcomer"))[0]!.serial;
    expect(retired.json.serials).toContain(reused);
    const report = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/migration/retire`, t.apiKeys.operator);
    expect(report.json).toMatchObject({ retired: 0, retiredEver: 2, reusedSince: 1 });
  });
});

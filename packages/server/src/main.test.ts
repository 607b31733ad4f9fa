import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";
import { startServer, type RunningServer } from "./main.js";
import { installerPrincipal } from "./modules/operators/access.js";
import { createTestDatabase, type TestDatabase } from "./testing/databases.js";
import { expiredChallengeRow } from "./testing/fixtures.js";

describe("a server on a port picked at start", () => {
  let database: TestDatabase;
  let server: RunningServer;
  beforeAll(async () => {
    database = await createTestDatabase("sqlite");
    server = await startServer(loadConfig({ TESSERA_DATA_DIR: database.dataDir, TESSERA_HTTP_PORT: "0", TESSERA_RADIUS_PORT: "off", TESSERA_MASTER_KEY: "12".repeat(32), TESSERA_LOG_LEVEL: "silent" }));
  });
  afterAll(async () => {
    await server.close();
    await database.drop();
  });

  it("names its real address in enrollment links when TESSERA_PUBLIC_URL is not set", async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*$/);
    const services = server.services;
    const vsId = (await services.virtualServers.create(installerPrincipal, { name: "Port Org" })).id;
    await services.users.create(installerPrincipal, vsId, { userId: "pat", firstName: "Pat", lastName: "", email: "pat@example.test", groups: [] });
    await services.tokens.add(installerPrincipal, { virtualServerId: vsId, type: "mobile", count: 1 });
    await services.provisioning.createTask(installerPrincipal, { virtualServerId: vsId, users: { userIds: ["pat"] }, tokenType: "mobile" });
    const link = (await services.mail.listOutbox(installerPrincipal, { virtualServerId: vsId, status: "queued", limit: 10 })).items[0]!.enrollUrl!;
    expect(link.startsWith(`${server.url}/enroll/`)).toBe(true);
    const page = await (await fetch(link)).text();
    expect(page).toContain(`${server.url}/app/#/enroll?code=`);
  });

  it("closes a push challenge nobody answered within seconds of its expiry, and audits it", async () => {
    const services = server.services;
    const vsId = (await services.virtualServers.create(installerPrincipal, { name: "Expiry Org" })).id;
    await services.users.create(installerPrincipal, vsId, { userId: "eve", firstName: "Eve", lastName: "", email: "eve@example.test", groups: [] });
    const application = await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "portal", kind: "rest", pushOtp: true });
    const { db } = services.storage;
    const user = await db.selectFrom("users").select("id").where("user_id", "=", "eve").where("virtual_server_id", "=", vsId).executeTakeFirstOrThrow();
    const now = Date.now();
    // As a push login opens it, with its time already run out.
    await db
      .insertInto("challenges")
      .values(expiredChallengeRow({ id: "chl_mainsweep", virtualServerId: vsId, applicationId: application.id, userPk: user.id, nowMs: now }))
      .execute();
    const status = async () => (await db.selectFrom("challenges").select("status").where("id", "=", "chl_mainsweep").executeTakeFirstOrThrow()).status;
    // The server looks every 5 seconds.
    await expect.poll(status, { timeout: 12_000, interval: 250 }).toBe("expired");
    const audited = await db.selectFrom("audit_log").select("details").where("action", "=", "auth.push_expired").execute();
    expect(audited.filter((record) => (JSON.parse(record.details ?? "{}") as { challengeId?: string }).challengeId === "chl_mainsweep")).toHaveLength(1);
  }, 20_000);
});

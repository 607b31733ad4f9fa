import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";
import { startServer, type RunningServer } from "./main.js";
import { installerPrincipal } from "./modules/operators/access.js";
import { createTestDatabase, type TestDatabase } from "./testing/databases.js";

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
});

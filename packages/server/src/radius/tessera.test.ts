import { totp } from "@tessera/otp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { openCore } from "../core.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";
import { placeTokenInState } from "../testing/fixtures.js";
import { radclient, radclientStatus } from "./testing.js";

// placeTokenInState gives tokens the key 0x01 x 20 (SHA1, 6 digits, 30 s).
const KEY = Buffer.alloc(20, 1);
const SECRET = "a-long-shared-secret-for-the-vpn";

describe("RADIUS in the running server, checked by radclient", () => {
  let database: TestDatabase;
  let server: RunningServer;
  beforeAll(async () => {
    database = await createTestDatabase("sqlite");
    const config = loadConfig({ TESSERA_DATA_DIR: database.dataDir, TESSERA_HTTP_PORT: "0", TESSERA_RADIUS_PORT: "0", TESSERA_MASTER_KEY: "ab".repeat(32), TESSERA_LOG_LEVEL: "silent" });
    const core = await openCore(config);
    const vs = await core.virtualServers.create(installerPrincipal, { name: "VPN users" });
    await placeTokenInState(core, vs.id, "active", { userId: "alice" });
    await core.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "vpn", kind: "radius", radiusAddresses: ["127.0.0.0/8"], radiusSecret: SECRET });
    await core.storage.close();
    server = await startServer(config);
  });
  afterAll(async () => {
    await server.close();
    await database.drop();
  });

  const request = (password: string) => `User-Name = "alice"\nUser-Password = "${password}"\nMessage-Authenticator = 0x00\n`;

  it("accepts a good passcode once, rejects its replay, and answers every reply with a valid Message-Authenticator", async () => {
    const port = server.radius!.port;
    // A fresh step, so that no earlier test took this passcode.
    const now = Date.now();
    const passcode = totp(KEY, { atMs: now, periodSeconds: 30, digits: 6, algorithm: "SHA1" });
    const accepted = await radclient(port, SECRET, request(passcode));
    expect(accepted.stdout).toContain("Received Access-Accept");
    expect(accepted.stdout).toMatch(/Message-Authenticator = 0x[0-9a-f]{32}/);
    expect(`${accepted.stdout}${accepted.stderr}`).not.toMatch(/invalid|verification failed/i);
    const replayed = await radclient(port, SECRET, `${request(passcode)}NAS-Identifier = "vpn-gw-2"\nCalling-Station-Id = "203.0.113.50"\nResponse-Packet-Type = Access-Reject\n`);
    expect(replayed.stdout).toContain("Received Access-Reject");
    // The trail names the end user's address, the RADIUS client's and the NAS.
    await server.services.audit.settle();
    const last = await server.services.storage.db.selectFrom("audit_log").select(["action", "reason", "details"]).where("action", "like", "auth.%").orderBy("seq", "desc").limit(1).executeTakeFirstOrThrow();
    expect({ ...last, details: JSON.parse(last.details!) }).toMatchObject({
      action: "auth.reject",
      reason: "replayed",
      details: { method: "radius", userId: "alice", source: "203.0.113.50", client: "127.0.0.1", nasIdentifier: "vpn-gw-2" },
    });
  });

  it("takes the client whose matching range is the most specific, not the one with the narrowest entry anywhere", async () => {
    const vsId = (await server.services.storage.db.selectFrom("virtual_servers").select("id").executeTakeFirstOrThrow()).id;
    const wide = await server.services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "wide", kind: "radius", radiusAddresses: ["192.0.2.7", "127.0.0.0/12"], radiusSecret: "the-wide-ranges-shared-secret" });
    const narrow = await server.services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "narrow", kind: "radius", radiusAddresses: ["127.0.0.0/16"], radiusSecret: "the-narrow-ranges-shared-secret" });
    await server.refreshRadiusClients();
    try {
      // 127.0.0.1 is in both ranges; the /16 is narrower than the /12 (192.0.2.7 is a /32, but not this source's).
      const narrowAnswer = await radclient(server.radius!.port, "the-narrow-ranges-shared-secret", `${request("000000")}Response-Packet-Type = Access-Reject\n`);
      expect(narrowAnswer.stdout).toContain("Received Access-Reject");
      const wideAnswer = await radclient(server.radius!.port, "the-wide-ranges-shared-secret", request("000000"));
      expect(`${wideAnswer.stdout}${wideAnswer.stderr}`).toMatch(/no reply/i);
    } finally {
      for (const application of [wide, narrow]) await server.services.applications.delete(installerPrincipal, application.id);
      await server.refreshRadiusClients();
    }
  });

  it("answers Status-Server while its database answers", async () => {
    const run = await radclientStatus(server.radius!.port, SECRET);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/Received Access-Accept[^\n]*\n\tMessage-Authenticator = 0x[0-9a-f]{32}\n\tReply-Message = "Tessera is up"/);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^tessera_radius_packets\{counter="statusAnswers"\} 1$/m);
  });

  it("stays silent to a wrong shared secret", async () => {
    const run = await radclient(server.radius!.port, "not-the-secret", request("123456"));
    expect(run.exitCode).not.toBe(0);
    expect(`${run.stdout}${run.stderr}`).toMatch(/no reply/i);
  });
});

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { totp } from "@tessera/otp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { openCore } from "../core.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";
import { placeTokenInState } from "../testing/fixtures.js";
import { Attribute, Code } from "./attributes.js";
import { accessRequest, createTestNas, radclient, radclientStatus } from "./testing.js";

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

  it("tells overlapping clients apart by their shared secret, so that another virtual server's range cannot take a NAS's requests", async () => {
    const db = server.services.storage.db;
    const vsId = (await db.selectFrom("virtual_servers").select("id").where("name", "=", "VPN users").executeTakeFirstOrThrow()).id;
    const otherVs = await server.services.virtualServers.create(installerPrincipal, { name: "Another organisation" });
    const wide = await server.services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "wide", kind: "radius", radiusAddresses: ["192.0.2.7", "127.0.0.0/12"], radiusSecret: "the-wide-ranges-shared-secret" });
    const narrow = await server.services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "narrow", kind: "radius", radiusAddresses: ["127.0.0.0/16"], radiusSecret: "the-narrow-ranges-shared-secret" });
    // Another organisation's admin names this NAS's own address, and everything, as theirs.
    const intruder = await server.services.applications.create(installerPrincipal, { virtualServerId: otherVs.id, name: "intruder", kind: "radius", radiusAddresses: ["127.0.0.1", "0.0.0.0/0"], radiusSecret: "the-other-organisations-secret" });
    // The same secret as narrow's on a wider range: where both verify, the most specific range decides.
    const twin = await server.services.applications.create(installerPrincipal, { virtualServerId: otherVs.id, name: "twin", kind: "radius", radiusAddresses: ["127.0.0.0/14"], radiusSecret: "the-narrow-ranges-shared-secret" });
    // Written as IPv6, 127.0.0.0/8 is still a /8 for an IPv4 NAS, not a /104.
    const mapped = await server.services.applications.create(installerPrincipal, { virtualServerId: otherVs.id, name: "mapped", kind: "radius", radiusAddresses: ["::ffff:127.0.0.0/104"], radiusSecret: "the-narrow-ranges-shared-secret" });
    await server.refreshRadiusClients();
    const answeredBy = async (secret: string) => {
      const answer = await radclient(server.radius!.port, secret, `${request("000000")}Response-Packet-Type = Access-Reject\n`);
      expect(answer.stdout).toContain("Received Access-Reject");
      await server.services.audit.settle();
      return (await db.selectFrom("audit_log").select("actor").where("action", "like", "auth.%").orderBy("seq", "desc").limit(1).executeTakeFirstOrThrow()).actor;
    };
    try {
      expect(await answeredBy(SECRET)).toBe("application:vpn");
      expect(await answeredBy("the-wide-ranges-shared-secret")).toBe("application:wide");
      expect(await answeredBy("the-narrow-ranges-shared-secret")).toBe("application:narrow");
      expect(await answeredBy("the-other-organisations-secret")).toBe("application:intruder");
      const badAuthenticators = async () => Number(/^tessera_radius_packets_total\{counter="badAuthenticator"\} (\d+)$/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1]);
      const before = await badAuthenticators();
      const wrong = await radclient(server.radius!.port, "nobodys-shared-secret", request("000000"));
      expect(`${wrong.stdout}${wrong.stderr}`).toMatch(/no reply/i);
      expect(await badAuthenticators()).toBeGreaterThan(before);
    } finally {
      for (const application of [wide, narrow, intruder, twin, mapped]) await server.services.applications.delete(installerPrincipal, application.id);
      await server.refreshRadiusClients();
    }
  });

  it("audits and counts a request refused for using CHAP instead of PAP, and one without a User-Name; an empty Calling-Station-Id names no source", async () => {
    const db = server.services.storage.db;
    const lastLogin = async () => {
      await server.services.audit.settle();
      const row = await db.selectFrom("audit_log").select(["action", "reason", "details", "token_serial"]).where("action", "like", "auth.%").orderBy("seq", "desc").limit(1).executeTakeFirstOrThrow();
      return { ...row, details: JSON.parse(row.details!) };
    };
    const chap = await radclient(server.radius!.port, SECRET, `User-Name = "alice"\nCHAP-Password = "123456"\nNAS-Identifier = "old-vpn"\nCalling-Station-Id = "203.0.113.61"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Reject\n`);
    expect(chap.stdout).toContain("Received Access-Reject");
    expect(chap.stdout).toContain('Reply-Message = "PAP only"');
    expect(await lastLogin()).toMatchObject({ action: "auth.reject", reason: "not_pap", token_serial: null, details: { method: "radius", userId: "alice", source: "203.0.113.61", client: "127.0.0.1", nasIdentifier: "old-vpn", application: "vpn" } });
    const nameless = await radclient(server.radius!.port, SECRET, `User-Password = "123456"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Reject\n`);
    expect(nameless.stdout).toContain("Received Access-Reject");
    expect(await lastLogin()).toMatchObject({ action: "auth.reject", reason: "no_user_name", details: { method: "radius", userId: "", source: "127.0.0.1" } });
    // An empty Calling-Station-Id names no address: the NAS's own counts, not "" shared by every such NAS.
    // (radclient leaves an empty attribute out; a NAS of our own sends it.)
    const nas = await createTestNas(server.radius!.port);
    await nas.send(accessRequest({ secret: Buffer.from(SECRET), userName: "nobody-here", password: "000000", attributes: [{ type: Attribute.CallingStationId, value: Buffer.alloc(0) }] }));
    expect((await nas.nextReply(5000))?.[0]).toBe(Code.AccessReject);
    expect(await lastLogin()).toMatchObject({ action: "auth.reject", reason: "user_unknown", details: { userId: "nobody-here", source: "127.0.0.1" } });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^tessera_authentications_total\{method="radius",result="reject",reason="not_pap"\} 1$/m);
    expect(metrics).toMatch(/^tessera_authentications_total\{method="radius",result="reject",reason="no_user_name"\} 1$/m);
  });

  it("accepts the codes oathtool computes for HOTP, TOTP SHA-256 with 8 digits and TOTP SHA-512 with 60 s, once each", async () => {
    const db = server.services.storage.db;
    const vsId = (await db.selectFrom("virtual_servers").select("id").where("name", "=", "VPN users").executeTakeFirstOrThrow()).id;
    const kinds = [
      { userId: "hotp-user", otpMode: "hotp" as const, algorithm: "SHA1" as const, digits: 6 as const, periodSeconds: 30, oathtool: ["--hotp", "-c", "4", "-d", "6"] },
      { userId: "sha256-user", otpMode: "totp" as const, algorithm: "SHA256" as const, digits: 8 as const, periodSeconds: 30, oathtool: ["--totp=sha256", "-s", "30s", "-d", "8"] },
      { userId: "sha512-user", otpMode: "totp" as const, algorithm: "SHA512" as const, digits: 6 as const, periodSeconds: 60, oathtool: ["--totp=sha512", "-s", "60s", "-d", "6"] },
    ];
    const secrets = new Map<string, Buffer>();
    for (const kind of kinds) {
      const secret = randomBytes(kind.algorithm === "SHA1" ? 20 : kind.algorithm === "SHA256" ? 32 : 64);
      secrets.set(kind.userId, secret);
      const serial = `OATH-${kind.userId}`.toUpperCase();
      await server.services.tokens.importSeeds(installerPrincipal, { virtualServerId: vsId, seeds: [{ serial, secret, otpMode: kind.otpMode, digits: kind.digits, periodSeconds: kind.periodSeconds, algorithm: kind.algorithm, counter: 0 }] });
      await server.services.users.create(installerPrincipal, vsId, { userId: kind.userId, firstName: "", lastName: "", email: "", groups: [] });
      const user = await db.selectFrom("users").select("id").where("virtual_server_id", "=", vsId).where("user_id", "=", kind.userId).executeTakeFirstOrThrow();
      await db.updateTable("tokens").set({ state: "active", user_pk: user.id }).where("serial", "=", serial).execute();
      // oathtool is the independent client: our code computes nothing here.
      const passcode = execFileSync("oathtool", [...kind.oathtool, secret.toString("hex")], { encoding: "utf8" }).trim();
      expect(passcode).toMatch(new RegExp(`^\\d{${kind.digits}}$`));
      const ask = (code: string, expected: string) => radclient(server.radius!.port, SECRET, `User-Name = "${kind.userId}"\nUser-Password = "${code}"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = ${expected}\n`);
      expect((await ask(passcode, "Access-Accept")).stdout, kind.userId).toContain("Received Access-Accept");
      expect((await ask(passcode, "Access-Reject")).stdout, kind.userId).toContain("Received Access-Reject");
    }
    // The HOTP counter moved past 4: an earlier press of the device no longer works, the next one does.
    const hotpCode = (counter: number) => execFileSync("oathtool", ["--hotp", "-c", String(counter), "-d", "6", secrets.get("hotp-user")!.toString("hex")], { encoding: "utf8" }).trim();
    const hotpAsk = (code: string, expected: string) => radclient(server.radius!.port, SECRET, `User-Name = "hotp-user"\nUser-Password = "${code}"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = ${expected}\n`);
    expect((await hotpAsk(hotpCode(2), "Access-Reject")).stdout).toContain("Received Access-Reject");
    expect((await hotpAsk(hotpCode(5), "Access-Accept")).stdout).toContain("Received Access-Accept");
  });

  it("answers Status-Server while its database answers", async () => {
    const run = await radclientStatus(server.radius!.port, SECRET);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/Received Access-Accept[^\n]*\n\tMessage-Authenticator = 0x[0-9a-f]{32}\n\tReply-Message = "Tessera is up"/);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^tessera_radius_packets_total\{counter="statusAnswers"\} 1$/m);
    // Counts since start are counters; what the server holds now, gauges.
    expect(metrics).toMatch(/^# TYPE tessera_radius_packets_total counter$/m);
    expect(metrics).not.toMatch(/counter="(inFlight|cached)"/);
    expect(metrics).toMatch(/^# TYPE tessera_radius_in_flight gauge\ntessera_radius_in_flight 0$/m);
    expect(metrics).toMatch(/^# TYPE tessera_radius_cached_answers gauge\ntessera_radius_cached_answers \d+$/m);
  });

  it("stays silent to a wrong shared secret", async () => {
    const run = await radclient(server.radius!.port, "not-the-secret", request("123456"));
    expect(run.exitCode).not.toBe(0);
    expect(`${run.stdout}${run.stderr}`).toMatch(/no reply/i);
  });
});

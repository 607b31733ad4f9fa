import { spawn } from "node:child_process";
import { mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { collect } from "../testing/cli.js";
import { freePort } from "../testing/net.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";

// The tessera-authenticator binary of the authenticator package, run for real against a
// real server: enroll from the link in the outbox, read passcodes, change settings.
const bin = fileURLToPath(new URL("../../../authenticator/bin/tessera-authenticator.js", import.meta.url));
const RADIUS_SECRET = "a-long-shared-secret-for-the-vpn";

/** radclient with time for a person to answer on the phone: one try, 20 seconds. */
function radclientWaiting(port: number, attributes: string) {
  const child = spawn("radclient", ["-x", "-t", "20", "-r", "1", `127.0.0.1:${port}`, "auth", RADIUS_SECRET], { stdio: ["pipe", "pipe", "pipe"] });
  child.stdin!.end(attributes);
  return collect(child);
}


describe("the tessera-authenticator CLI against a running server", () => {
  let database: TestDatabase;
  let server: RunningServer;
  let home: string;
  let vsId: string;
  let restKey: string;
  let vpnId: string;
  const app = (...args: string[]) => collect(spawn(process.execPath, [bin, "--home", home, ...args], { stdio: ["ignore", "pipe", "pipe"] }));
  const appJson = async <T>(...args: string[]): Promise<T> => {
    const run = await app(...args, "--json");
    expect(run, run.stderr).toMatchObject({ code: 0 });
    return JSON.parse(run.stdout) as T;
  };
  const linkFor = async (userId: string) => {
    const task = await server.services.provisioning.createTask(installerPrincipal, { virtualServerId: vsId, users: { userIds: [userId] }, tokenType: "mobile" });
    const outbox = await server.services.mail.listOutbox(installerPrincipal, { virtualServerId: vsId, status: "queued", limit: 100 });
    const mail = outbox.items.find((item) => item.to === `${userId}@example.test`);
    expect(task.counts.total).toBe(1);
    return mail!.enrollUrl!;
  };

  beforeAll(async () => {
    database = await createTestDatabase("sqlite");
    home = mkdtempSync(path.join(tmpdir(), "tessera-authenticator-"));
    const port = await freePort();
    const config = loadConfig({ TESSERA_DATA_DIR: database.dataDir, TESSERA_HTTP_PORT: String(port), TESSERA_RADIUS_PORT: "0", TESSERA_MASTER_KEY: "cd".repeat(32), TESSERA_LOG_LEVEL: "silent" });
    server = await startServer(config);
    const services = server.services;
    vsId = (await services.virtualServers.create(installerPrincipal, { name: "CLI Org" })).id;
    for (const userId of ["cli-ann", "cli-bob"]) {
      await services.users.create(installerPrincipal, vsId, { userId, firstName: userId, lastName: "", email: `${userId}@example.test`, groups: [] });
    }
    await services.tokens.add(installerPrincipal, { virtualServerId: vsId, type: "mobile", count: 2 });
    vpnId = (await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "vpn", kind: "radius", pushOtp: true, radiusAddresses: ["127.0.0.0/8"], radiusSecret: RADIUS_SECRET })).id;
    await server.refreshRadiusClients();
    restKey = (await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "portal", kind: "rest" })).apiKey!;
  });
  afterAll(async () => {
    await server.close();
    await database.drop();
  });

  it("enrolls from the email's link, shows a passcode the server accepts, and keeps its keys in a 0600 file", async () => {
    const link = await linkFor("cli-ann");
    const enrolled = await appJson<{ serial: string; userId: string; pushApplications: string[]; key?: string }>("enroll", link);
    expect(enrolled).toMatchObject({ userId: "cli-ann", pushApplications: ["vpn"] });
    expect(enrolled.key).toBeUndefined();
    expect(statSync(path.join(home, "state.json")).mode & 0o777).toBe(0o600);
    const token = await server.services.tokens.get(installerPrincipal, enrolled.serial);
    expect(token).toMatchObject({ state: "active", device: { app: "tessera", deviceType: "desktop", pushAtEnrollment: "enabled", pushNow: "enabled" } });
    expect(token.device?.appVersion).toMatch(/^cli /);

    // The enrollment spent this time step's passcode; step the token's record back one, as
    // if the next step had come, so the passcode the CLI shows now must be accepted.
    await server.services.storage.db
      .updateTable("tokens")
      .set((eb) => ({ last_totp_step: eb("last_totp_step", "-", 1) }))
      .where("serial", "=", enrolled.serial)
      .execute();
    const code = await appJson<{ passcode: string; serial: string }>("code", enrolled.serial);
    const response = await fetch(`${server.url}/api/v1/auth`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${restKey}` },
      body: JSON.stringify({ userId: "cli-ann", passcode: code.passcode }),
    });
    expect(await response.json()).toEqual({ result: "accept", serial: enrolled.serial });

    const again = await app("enroll", link);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error ENROLLMENT_CODE_INVALID/);
  });

  it("declines push with --no-push, and Autosend Passcode changes the current state only", async () => {
    const enrolled = await appJson<{ serial: string }>("enroll", await linkFor("cli-bob"), "--no-push");
    expect((await server.services.tokens.get(installerPrincipal, enrolled.serial)).device).toMatchObject({ pushAtEnrollment: "disabled", pushNow: "disabled" });
    await appJson("settings", "--autosend", "on");
    expect((await server.services.tokens.get(installerPrincipal, enrolled.serial)).device).toMatchObject({ pushAtEnrollment: "disabled", pushNow: "enabled" });
    const listed = await appJson<{ tokens: Array<{ serial: string }> }>("list");
    expect(listed.tokens.map((t) => t.serial)).toContain(enrolled.serial);
    const removed = await app("remove", enrolled.serial);
    expect(removed.code).toBe(0);
    expect((await appJson<{ tokens: Array<{ serial: string }> }>("list")).tokens.map((t) => t.serial)).not.toContain(enrolled.serial);
  });

  it("answers Push OTP over RADIUS in hold mode: approved by the CLI authenticator it is accepted, denied it is rejected", async () => {
    const port = server.radius!.port;
    for (const [decision, expected] of [["approve", "Access-Accept"], ["deny", "Access-Reject"]] as const) {
      const listener = app("listen", "--answer", decision, "--once", "--json");
      const reply = await radclientWaiting(port, `User-Name = "cli-ann"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = ${expected}\n`);
      const listened = await listener;
      expect(listened.code, listened.stderr).toBe(0);
      expect(JSON.parse(listened.stdout)).toMatchObject({ decision, challenge: { resourceName: "vpn", source: "127.0.0.1" } });
      expect(reply.stdout).toContain(`Received ${expected}`);
    }
    // The login reached the CLI over the live connection (the event stream), not the poll.
    const device = await server.services.storage.db.selectFrom("devices").innerJoin("tokens", "tokens.serial", "devices.token_serial").innerJoin("users", "users.id", "tokens.user_pk").select("devices.live_capable").where("users.user_id", "=", "cli-ann").executeTakeFirstOrThrow();
    expect(device.live_capable).toBe(1);
  });

  it("answers Push OTP over RADIUS in challenge mode: Access-Challenge with State, then the answer to it", async () => {
    await server.services.applications.update(installerPrincipal, vpnId, { pushMode: "challenge" });
    await server.refreshRadiusClients();
    const port = server.radius!.port;
    const challenged = await radclientWaiting(port, `User-Name = "cli-ann"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Challenge\n`);
    expect(challenged.stdout).toContain("Received Access-Challenge");
    const state = /State = (0x[0-9a-f]+)/.exec(challenged.stdout)![1]!;
    expect(challenged.stdout).toMatch(/Reply-Message = "Approve the sign-in on your phone \(number \d{2}\), then press Enter \(or type your passcode\)"/);
    const listened = await app("listen", "--answer", "approve", "--once", "--json");
    expect(listened.code, listened.stderr).toBe(0);
    // Another user name with the State gets nothing; the user it was for gets in, once.
    const stranger = await radclientWaiting(port, `User-Name = "cli-bob"\nState = ${state}\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Reject\n`);
    expect(stranger.stdout).toContain("Received Access-Reject");
    const answered = await radclientWaiting(port, `User-Name = "cli-ann"\nState = ${state}\nMessage-Authenticator = 0x00\n`);
    expect(answered.stdout).toContain("Received Access-Accept");
    const replayed = await radclientWaiting(port, `User-Name = "cli-ann"\nState = ${state}\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Reject\n`);
    expect(replayed.stdout).toContain("Received Access-Reject");
  });

  it("challenges last the application's push timeout; a passcode typed in answer to the Access-Challenge closes the challenge", async () => {
    await server.services.applications.update(installerPrincipal, vpnId, { pushMode: "challenge", pushTimeoutSeconds: 25 });
    await server.refreshRadiusClients();
    const port = server.radius!.port;
    const challenged = await radclientWaiting(port, `User-Name = "cli-ann"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Challenge\n`);
    expect(challenged.stdout).toContain("Session-Timeout = 25");
    const state = /State = 0x([0-9a-f]+)/.exec(challenged.stdout)![1]!;
    const challengeId = Buffer.from(state, "hex").toString("utf8");
    const { db } = server.services.storage;
    const opened = await db.selectFrom("challenges").selectAll().where("id", "=", challengeId).executeTakeFirstOrThrow();
    expect(opened.expires_at - opened.created_at).toBe(25_000);

    // The phone is offline: the user types the passcode from the app instead (the push
    // approvals before this spent the current step: the record is stepped back).
    const serial = (await db.selectFrom("tokens").innerJoin("users", "users.id", "tokens.user_pk").select("tokens.serial").where("users.user_id", "=", "cli-ann").where("tokens.state", "=", "active").executeTakeFirstOrThrow()).serial;
    await db.updateTable("tokens").set({ last_totp_step: null }).where("serial", "=", serial).execute();
    const code = await appJson<{ passcode: string }>("code", serial);
    const typed = await radclientWaiting(port, `User-Name = "cli-ann"\nUser-Password = "${code.passcode}"\nState = 0x${state}\nMessage-Authenticator = 0x00\n`);
    expect(typed.stdout).toContain("Received Access-Accept");
    expect(await db.selectFrom("challenges").select("status").where("id", "=", challengeId).executeTakeFirstOrThrow()).toEqual({ status: "cancelled" });
    await server.services.audit.settle();
    const trail = await db.selectFrom("audit_log").select(["action", "reason"]).where("details", "like", `%${challengeId}%`).orderBy("seq").execute();
    expect(trail).toContainEqual({ action: "auth.push_cancelled", reason: "the user typed the passcode instead" });
  });

  it("holds a RADIUS request no longer than the application's push timeout", async () => {
    await server.services.applications.update(installerPrincipal, vpnId, { pushMode: "hold", pushTimeoutSeconds: 10 });
    await server.refreshRadiusClients();
    const started = Date.now();
    // Nobody answers on the phone: the NAS hears after 10 seconds, not 60.
    const reply = await radclientWaiting(server.radius!.port, `User-Name = "cli-ann"\nMessage-Authenticator = 0x00\nResponse-Packet-Type = Access-Reject\n`);
    expect(reply.stdout).toContain("Received Access-Reject");
    expect(reply.stdout).toContain('Reply-Message = "No answer from your phone"');
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_500);
  });

  it("refuses a link without an enrollment code", async () => {
    const run = await app("enroll", "https://example.test/nothing-here");
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error LINK_INVALID/);
  });
});

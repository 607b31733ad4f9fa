import { spawn } from "node:child_process";
import { mkdtempSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { collect } from "../testing/cli.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";

// The tessera-authenticator binary of the authenticator package, run for real against a
// real server: enroll from the link in the outbox, read passcodes, change settings.
const bin = fileURLToPath(new URL("../../../authenticator/bin/tessera-authenticator.js", import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

describe("the tessera-authenticator CLI against a running server", () => {
  let database: TestDatabase;
  let server: RunningServer;
  let home: string;
  let vsId: string;
  let restKey: string;
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
    const config = loadConfig({ TESSERA_DATA_DIR: database.dataDir, TESSERA_HTTP_PORT: String(port), TESSERA_RADIUS_PORT: "off", TESSERA_MASTER_KEY: "cd".repeat(32), TESSERA_LOG_LEVEL: "silent" });
    server = await startServer(config);
    const services = server.services;
    vsId = (await services.virtualServers.create(installerPrincipal, { name: "CLI Org" })).id;
    for (const userId of ["cli-ann", "cli-bob"]) {
      await services.users.create(installerPrincipal, vsId, { userId, firstName: userId, lastName: "", email: `${userId}@example.test`, groups: [] });
    }
    await services.tokens.add(installerPrincipal, { virtualServerId: vsId, type: "mobile", count: 2 });
    await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "vpn", kind: "radius", pushOtp: true, radiusAddresses: ["10.0.0.0/8"] });
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

  it("refuses a link without an enrollment code", async () => {
    const run = await app("enroll", "https://example.test/nothing-here");
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error LINK_INVALID/);
  });
});

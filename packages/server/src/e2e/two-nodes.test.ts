import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { collect } from "../testing/cli.js";
import { LISTENER_APPLICATION_NAME } from "../modules/push/notify.js";
import { freePort } from "../testing/net.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";

// Two Tessera nodes on one PostgreSQL database: the phone's authenticator talks to node
// 1, the VPN's RADIUS request reaches node 2, and the approval made through node 1
// completes the login waiting on node 2.
const authenticatorBin = fileURLToPath(new URL("../../../authenticator/bin/tessera-authenticator.js", import.meta.url));
const SECRET = "a-long-shared-secret-for-the-vpn";


describe("two nodes on one PostgreSQL", () => {
  let database: TestDatabase;
  let node1: RunningServer;
  let node2: RunningServer;
  let home: string;
  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    home = mkdtempSync(path.join(tmpdir(), "tessera-two-nodes-"));
    const base = { DATABASE_URL: (database.target as { url: string }).url, TESSERA_MASTER_KEY: "ef".repeat(32), TESSERA_LOG_LEVEL: "silent" };
    const port1 = await freePort();
    node1 = await startServer(loadConfig({ ...base, TESSERA_DATA_DIR: path.join(database.dataDir, "node1"), TESSERA_HTTP_PORT: String(port1), TESSERA_RADIUS_PORT: "off" }));
    node2 = await startServer(loadConfig({ ...base, TESSERA_DATA_DIR: path.join(database.dataDir, "node2"), TESSERA_HTTP_PORT: "0", TESSERA_RADIUS_PORT: "0" }));
  });
  afterAll(async () => {
    await node1.close();
    await node2.close();
    await database.drop();
  });

  it("accepts a RADIUS login on node 2 that the user approves through node 1", async () => {
    const services = node1.services;
    const vs = await services.virtualServers.create(installerPrincipal, { name: "Two nodes" });
    await services.users.create(installerPrincipal, vs.id, { userId: "wanda", firstName: "Wanda", lastName: "", email: "wanda@example.test", groups: [] });
    await services.tokens.add(installerPrincipal, { virtualServerId: vs.id, type: "mobile", count: 1 });
    await services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "vpn", kind: "radius", pushOtp: true, radiusAddresses: ["127.0.0.0/8"], radiusSecret: SECRET });
    await node2.refreshRadiusClients();
    await services.provisioning.createTask(installerPrincipal, { virtualServerId: vs.id, users: { userIds: ["wanda"] }, tokenType: "mobile" });
    const link = (await services.mail.listOutbox(installerPrincipal, { virtualServerId: vs.id, status: "queued", limit: 1 })).items[0]!.enrollUrl!;
    expect(link.startsWith(node1.url)).toBe(true);

    const app = (...args: string[]) => collect(spawn(process.execPath, [authenticatorBin, "--home", home, ...args], { stdio: ["ignore", "pipe", "pipe"] }));
    const enrolled = await app("enroll", link, "--json");
    expect(enrolled.code, enrolled.stderr).toBe(0);

    const listener = app("listen", "--answer", "approve", "--once", "--json");
    const radclient = spawn("radclient", ["-x", "-t", "20", "-r", "1", `127.0.0.1:${node2.radius!.port}`, "auth", SECRET], { stdio: ["pipe", "pipe", "pipe"] });
    radclient.stdin!.end(`User-Name = "wanda"\nMessage-Authenticator = 0x00\n`);
    const [reply, listened] = await Promise.all([collect(radclient), listener]);
    expect(listened.code, listened.stderr).toBe(0);
    expect(JSON.parse(listened.stdout)).toMatchObject({ decision: "approve", status: "approved" });
    expect(reply.stdout).toContain("Received Access-Accept");
  });

  // Well within the ten seconds after which a node reads its applications again anyway:
  // what passes here came by notification.
  const SOONER_THAN_THE_BACKSTOP = { timeout: 5_000, interval: 100 };

  it("applies a change of an application made on node 1 at once on node 2: a rotated API key", async () => {
    const vs = await node1.services.virtualServers.create(installerPrincipal, { name: "Rotated across nodes" });
    const created = await node1.services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "portal", kind: "rest" });
    const statusAtNode2 = async (apiKey: string) =>
      (
        await fetch(`${node2.url}/api/v1/auth`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
          body: JSON.stringify({ userId: "nobody", passcode: "123456", sourceAddress: "198.51.100.20" }),
        })
      ).status;
    // Node 2 now keeps the application found by this key.
    expect(await statusAtNode2(created.apiKey!)).toBe(200);
    const rotated = await node1.services.applications.update(installerPrincipal, created.id, { rotateApiKey: true });
    await expect.poll(() => statusAtNode2(created.apiKey!), SOONER_THAN_THE_BACKSTOP).toBe(401);
    expect(await statusAtNode2(rotated.apiKey!)).toBe(200);
  });

  it("listens again when the LISTEN connections are lost, and hears the next change at once", async () => {
    const { db } = node1.services.storage;
    // Connections that have run their LISTEN and wait: they hear notifications.
    const listeners = async () =>
      (await sql<{ pid: number }>`select pid from pg_stat_activity where application_name = ${LISTENER_APPLICATION_NAME} and datname = current_database() and state = 'idle' and query like 'listen %'`.execute(db)).rows.map((row) => Number(row.pid));
    const lost = await listeners();
    expect(lost).toHaveLength(2);
    await sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${LISTENER_APPLICATION_NAME} and datname = current_database()`.execute(db);
    // Two listening connections again, both new.
    await expect.poll(async () => (await listeners()).filter((pid) => !lost.includes(pid)).length, { timeout: 10_000, interval: 100 }).toBe(2);

    const vs = await node1.services.virtualServers.create(installerPrincipal, { name: "Heard again" });
    const created = await node1.services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "portal", kind: "rest" });
    const statusAtNode2 = async (apiKey: string) =>
      (await fetch(`${node2.url}/api/v1/auth`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ userId: "nobody", passcode: "123456", sourceAddress: "198.51.100.21" }) })).status;
    // Kept by node 2 after it listened again: only a notification can make it go.
    expect(await statusAtNode2(created.apiKey!)).toBe(200);
    await node1.services.applications.update(installerPrincipal, created.id, { rotateApiKey: true });
    await expect.poll(() => statusAtNode2(created.apiKey!), SOONER_THAN_THE_BACKSTOP).toBe(401);
  });

  it("applies a new RADIUS client and a new shared secret made on node 1 at once on node 2", async () => {
    const vs = await node1.services.virtualServers.create(installerPrincipal, { name: "RADIUS across nodes" });
    const answered = async (secret: string) => {
      const radclient = spawn("radclient", ["-t", "1", "-r", "1", `127.0.0.1:${node2.radius!.port}`, "auth", secret], { stdio: ["pipe", "pipe", "pipe"] });
      radclient.stdin!.end(`User-Name = "nobody"\nUser-Password = "123456"\nMessage-Authenticator = 0x00\n`);
      return /Received Access-(Accept|Reject)/.test((await collect(radclient)).stdout);
    };
    // More specific than the first test's 127.0.0.0/8: from 127.0.0.1 this client wins, once node 2 knows it.
    // Node 2 rebuilds its table when it hears of a change; its ten-second timer could
    // happen to do the same, so that the change was heard is checked too.
    const heardAtNode2 = () =>
      new Promise<void>((resolve) => {
        const stop = node2.services.pushHub.onApplicationsChanged(() => {
          stop();
          resolve();
        });
      });
    const secret = "a-second-shared-secret-for-a-vpn";
    let heard = heardAtNode2();
    const created = await node1.services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "vpn", kind: "radius", radiusAddresses: ["127.0.0.1"], radiusSecret: secret });
    await heard;
    await expect.poll(() => answered(secret), SOONER_THAN_THE_BACKSTOP).toBe(true);
    const newSecret = "the-new-shared-secret-for-the-vpn";
    heard = heardAtNode2();
    await node1.services.applications.update(installerPrincipal, created.id, { radiusSecret: newSecret });
    await heard;
    await expect.poll(() => answered(newSecret), SOONER_THAN_THE_BACKSTOP).toBe(true);
    expect(await answered(secret)).toBe(false);
  });
});

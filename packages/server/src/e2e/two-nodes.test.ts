import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
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
    await services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "vpn", kind: "radius", pushOtp: true, radiusAddresses: ["127.0.0.1"], radiusSecret: SECRET });
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
});

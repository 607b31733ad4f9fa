import { writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { radclient } from "../radius/testing.js";
import { cliEnvironment, startServe, tessera, tesseraJson } from "../testing/cli.js";
import type { DatabaseKind } from "../storage/database.js";
import { createTestDatabase, describeEachDatabase, type TestDatabase } from "../testing/databases.js";

interface ApplicationJson {
  id: string;
  name: string;
  kind: string;
  pushOtp: boolean;
  pushMode: string;
  pushTimeoutSeconds: number;
  radiusAddresses: string[] | null;
  radiusSecret?: string;
  apiKey?: string;
}

/** For each test, a fresh database of `kind` holding the virtual server Acme. */
function useAcme(kind: DatabaseKind): { database: TestDatabase; env: NodeJS.ProcessEnv } {
  const acme = {} as { database: TestDatabase; env: NodeJS.ProcessEnv };
  beforeEach(async () => {
    acme.database = await createTestDatabase(kind);
    acme.env = cliEnvironment(acme.database);
    await tesseraJson(["bootstrap", "--name", "Acme"], acme.env);
  });
  afterEach(async () => acme.database.drop());
  return acme;
}

describeEachDatabase("tessera applications commands", (kind) => {
  const acme = useAcme(kind);

  const list = async () => (await tesseraJson<{ items: ApplicationJson[] }>(["applications", "list", "--vs", "Acme"], acme.env)).items;

  it("creates, changes and deletes RADIUS and REST clients, showing a made-up secret or API key once", async () => {
    const vpn = await tesseraJson<ApplicationJson>(
      ["applications", "create", "--vs", "Acme", "--name", "vpn", "--kind", "radius", "--address", "10.0.0.0/8", "--address", "192.0.2.7,2001:db8::/32", "--push", "--push-mode", "challenge", "--push-timeout", "20"],
      acme.env,
    );
    expect(vpn).toMatchObject({ name: "vpn", kind: "radius", pushOtp: true, pushMode: "challenge", pushTimeoutSeconds: 20, radiusAddresses: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"] });
    expect(vpn.radiusSecret).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(JSON.stringify(await list())).not.toContain(vpn.radiusSecret);

    const human = await tessera(["applications", "create", "--vs", "Acme", "--name", "portal", "--kind", "rest", "--resource-name", "Staff portal"], acme.env);
    expect(human.code, human.stderr).toBe(0);
    const apiKey = /API key (tak_\S+)/.exec(human.stdout)![1]!;
    const rotated = await tesseraJson<ApplicationJson>(["applications", "update", "portal", "--vs", "Acme", "--rotate-api-key"], acme.env);
    expect(rotated.apiKey).toMatch(/^tak_/);
    expect(rotated.apiKey).not.toBe(apiKey);

    const changed = await tesseraJson<ApplicationJson>(["applications", "update", vpn.id, "--vs", "Acme", "--no-push", "--push-timeout", "45", "--address", "10.1.0.0/16"], acme.env);
    expect(changed).toMatchObject({ pushOtp: false, pushMode: "challenge", pushTimeoutSeconds: 45, radiusAddresses: ["10.1.0.0/16"] });
    expect(changed.radiusSecret).toBeUndefined();
    expect((await list()).map((a) => a.name)).toEqual(["portal", "vpn"]);

    expect(await tesseraJson(["applications", "delete", "vpn", "--vs", "Acme"], acme.env)).toEqual({ deleted: vpn.id });
    expect((await list()).map((a) => a.name)).toEqual(["portal"]);
  });

  it("refuses bad input with a clear error and changes nothing", async () => {
    const refusals: Array<[string[], RegExp]> = [
      [["--kind", "radius"], /needs --address/],
      [["--kind", "radius", "--address", "vpn.example.com"], /^error VALIDATION_FAILED.*vpn\.example\.com/],
      [["--kind", "radius", "--address", "10.0.0.1", "--push-timeout", "5"], /a whole number of seconds from 10 to 300/],
      [["--kind", "rest", "--address", "10.0.0.1"], /for RADIUS clients/],
    ];
    for (const [args, message] of refusals) {
      const run = await tessera(["applications", "create", "--vs", "Acme", "--name", "bad", ...args], acme.env);
      expect(run.code, args.join(" ")).not.toBe(0);
      expect(run.stderr, args.join(" ")).toMatch(message);
    }
    const short = path.join(acme.database.dataDir, "short-secret");
    writeFileSync(short, "too-short\n");
    const run = await tessera(["applications", "create", "--vs", "Acme", "--name", "bad", "--kind", "radius", "--address", "10.0.0.1", "--secret-file", short], acme.env);
    expect(run.stderr).toMatch(/16 to 128/);
    expect(await list()).toEqual([]);
    const missing = await tessera(["applications", "delete", "nothing", "--vs", "Acme"], acme.env);
    expect(missing.stderr).toMatch(/no application nothing/);
  });
});

// A running server and radclient: the same code on both databases, so one is enough.
describe("tessera applications with a running server", () => {
  const acme = useAcme("sqlite");

  it("sets up a RADIUS client with a shared secret from a file, which a running server then answers within ten seconds", async () => {
    const secret = "a-shared-secret-kept-in-a-file-0123";
    const secretFile = path.join(acme.database.dataDir, "vpn-secret");
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
    const server = await startServe(acme.env);
    try {
      const created = await tesseraJson<ApplicationJson>(["applications", "create", "--vs", "Acme", "--name", "vpn", "--kind", "radius", "--address", "127.0.0.1", "--secret-file", secretFile], acme.env);
      expect(created.radiusSecret).toBeUndefined();
      // A user unknown to Tessera: an answer at all (Access-Reject) shows the client and
      // its secret are known; a stranger's datagram would get silence.
      let answered = "";
      for (let tries = 0; tries < 15 && !answered.includes("Received Access-Reject"); tries++) {
        answered = (await radclient(server.radiusPort!, secret, `User-Name = "nobody"\nUser-Password = "123456"\nMessage-Authenticator = 0x00\n`)).stdout;
        if (!answered.includes("Received")) await sleep(1000);
      }
      expect(answered).toContain("Received Access-Reject");
    } finally {
      server.child.kill("SIGTERM");
      await server.exit;
    }
  });
});

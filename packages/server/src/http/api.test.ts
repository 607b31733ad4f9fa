import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import { installerPrincipal } from "../modules/operators/access.js";
import { createServices } from "../core.js";
import { openStorage } from "../storage/database.js";
import { describeEachDatabase, type TestCore } from "../testing/databases.js";
import { createTenant, placeTokenInState, type TestTenant } from "../testing/fixtures.js";
import { useTestApp, type TestApp } from "./testing-app.js";

const requiredOperationIds = [
  "createVirtualServer", "listVirtualServers", "createOperator", "createUser", "getUser", "listUsers", "importUsers",
  "addTokens", "importTokens", "listTokens", "getToken", "allocateTokens", "deallocateTokens", "suspendToken",
  "reactivateToken", "unlockToken", "revokeToken", "reinitializeToken", "deleteToken", "getPolicy", "updatePolicy", "listAudit",
  // Provisioning and enrollment.
  "provisionToken", "createProvisioningTask", "getProvisioningTask", "listProvisioningTasks", "cancelProvisioningTask",
  "resendEnrollment", "createProvisioningRule", "listOutbox", "planMigration", "startMigration", "retireMigratedTokens",
  "enrollDevice", "confirmEnrollment", "updateDeviceSettings",
  // Applications.
  "createApplication", "listApplications", "updateApplication", "deleteApplication",
  // Authentication.
  "authenticate", "resyncToken",
];

describeEachDatabase("admin API", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  let key: string;
  const count = async (table: "tokens" | "users" | "audit_log") => {
    if (table === "audit_log") await core.services.audit.settle();
    return Number((await core.storage.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
  };

  useTestApp(
    kind,
    "API",
    (setting) => {
      ({ core, api, t } = setting);
      key = t.apiKeys.admin;
    },
    { bodyLimitBytes: 64 * 1024 },
  );

  describe("the service itself", () => {
    it("answers health and readiness", async () => {
      expect((await api.call("GET", "/healthz", null)).json).toEqual({ status: "ok" });
      expect((await api.call("GET", "/readyz", null)).json).toEqual({ status: "ready" });
    });

    it("publishes OpenAPI 3.1 with every operationId other tools rely on, and browsable docs", async () => {
      const document = (await api.call("GET", "/api/openapi.json", null)).json;
      expect(document.openapi).toBe("3.1.0");
      const ids = Object.values(document.paths as Record<string, Record<string, { operationId?: string }>>).flatMap((methods) =>
        Object.values(methods).map((operation) => operation.operationId),
      );
      for (const id of requiredOperationIds) expect(ids).toContain(id);
      expect(new Set(ids).size).toBe(ids.length);
      // Every $ref leads somewhere in the document, so that generators and validators can read it.
      const refs = new Set<string>();
      const walk = (value: unknown): void => {
        if (Array.isArray(value)) value.forEach(walk);
        else if (value && typeof value === "object")
          for (const [key, inner] of Object.entries(value)) {
            if (key === "$ref" && typeof inner === "string") refs.add(inner);
            else walk(inner);
          }
      };
      walk(document);
      const resolve = (ref: string) => ref.replace(/^#\//, "").split("/").reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part.replaceAll("~1", "/").replaceAll("~0", "~")], document);
      expect(refs.size).toBeGreaterThan(0);
      expect([...refs].filter((ref) => resolve(ref) === undefined)).toEqual([]);
      expect(document.components.schemas.Error).toBeDefined();
      const docs = await api.call("GET", "/api/docs/", null);
      expect(docs.status).toBe(200);
      expect(docs.body).toContain("<html");
    });
  });

  describe("what cannot be read", () => {
    it("refuses a path that does not decode, a NUL in an id or a name, and a wait that is not whole seconds, each with a 400 in the catalogue's shape", async () => {
      const restKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "unreadable", kind: "rest", pushOtp: true })).apiKey!;
      const application = (await api.call("GET", `/api/v1/applications?virtualServerId=${t.virtualServerId}`, key)).json.items[0].id as string;
      const before = await count("audit_log");
      const cases: Array<[string, string, string, unknown?]> = [
        ["GET", "/api/v1/auth/challenges/%E0%A4%A", restKey],
        ["DELETE", "/api/v1/applications/%", key],
        ["GET", "/api/v1/auth/challenges/chl_%00x?wait=0", restKey],
        ["DELETE", "/api/v1/auth/challenges/chl_%00x", restKey],
        ["PATCH", "/api/v1/applications/app_%00x", key, { pushOtp: true }],
        ["POST", "/api/v1/applications", key, { kind: "rest", virtualServerId: t.virtualServerId, name: "a\u0000b" }],
        ["PATCH", `/api/v1/applications/${application}`, key, { resourceName: "a\u0000b" }],
        ...["", "%20", "0x1", "1e0", "-0", "0b1", "61", "2.5"].map((wait): [string, string, string] => ["GET", `/api/v1/auth/challenges/chl_x?wait=${wait}`, restKey]),
      ];
      for (const [method, url, credential, body] of cases) {
        const answer = await api.call(method, url, credential, body);
        expect(answer.status, `${method} ${url}`).toBe(400);
        expect(answer.json.error.code, `${method} ${url}`).toMatch(/^(VALIDATION_FAILED|MALFORMED_REQUEST)$/);
        expect(answer.json.error.message).toEqual(expect.any(String));
      }
      // An id longer than any given out or accepted: 414, in the catalogue's shape too.
      const long = await api.call("DELETE", `/api/v1/applications/app_${"x".repeat(300)}`, key);
      expect({ status: long.status, code: long.json.error.code }).toEqual({ status: 414, code: "PATH_PARAMETER_TOO_LONG" });
      // A query value with NUL names nothing: not found where it can be looked for (SQLite), refused where it cannot (PostgreSQL).
      const nulQuery = await api.call("GET", "/api/v1/applications?virtualServerId=vs_%00x", key);
      expect([400, 404]).toContain(nulQuery.status);
      expect(nulQuery.json.error.code).toMatch(/^(VALIDATION_FAILED|VIRTUAL_SERVER_NOT_FOUND)$/);
      // Digits are read as seconds, and a missing wait is the default.
      expect((await api.call("GET", "/api/v1/auth/challenges/chl_x?wait=0", restKey)).json).toEqual({ status: "reject", reason: "unknown_challenge" });
      expect((await api.call("GET", "/api/v1/auth/challenges/chl_x", restKey)).json).toEqual({ status: "reject", reason: "unknown_challenge" });
      expect(await count("audit_log")).toBe(before);
    });

    it("routes the longest user id there may be (128 characters), past the router's default of 100", async () => {
      const longest = "u".repeat(128);
      expect((await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users`, key, { userId: longest, firstName: "Long", lastName: "Name", email: "long@example.test", groups: [] })).status).toBe(201);
      expect((await api.call("GET", `/api/v1/virtual-servers/${t.virtualServerId}/users/${longest}`, key)).json).toMatchObject({ userId: longest });
    });
  });

  describe("authentication", () => {
    it("refuses requests without credentials or with a made-up key", async () => {
      for (const credential of [null, "tsk_key_aaaaaaaaaaaaaaaa.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonsense"]) {
        const response = await api.call("GET", "/api/v1/virtual-servers", credential);
        expect(response.status).toBe(401);
        expect(response.json.error.code).toBe("UNAUTHENTICATED");
      }
      // The scheme is read in any case (RFC 9110), for operators and applications alike; another scheme is none.
      for (const scheme of ["bearer", "BEARER", "Bearer  "]) expect((await api.call("GET", "/api/v1/me", null, undefined, { authorization: `${scheme} ${key}` })).status).toBe(200);
      expect((await api.call("GET", "/api/v1/me", null, undefined, { authorization: `Basic ${key}` })).status).toBe(401);
      const restKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "lowercase", kind: "rest" })).apiKey!;
      const login = await api.call("POST", "/api/v1/auth", null, { userId: "nobody-here", passcode: "123456" }, { authorization: `bearer ${restKey}` });
      expect(login.json).toMatchObject({ result: "reject", reason: "user_unknown" });
    });

    it("logs an operator in with a password and accepts the session token", async () => {
      const operator = await core.services.operators.create(installerPrincipal, {
        email: "Login@API.test",
        name: "Login",
        role: "auditor",
        virtualServerId: t.virtualServerId,
        password: "correct horse battery staple",
      });
      const wrong = await api.call("POST", "/api/v1/sessions", null, { email: "login@api.test", password: "wrong password!" });
      expect(wrong.status).toBe(401);
      expect(wrong.json.error.code).toBe("INVALID_CREDENTIALS");
      const unknown = await api.call("POST", "/api/v1/sessions", null, { email: "nobody@api.test", password: "whatever" });
      expect(unknown.json.error.code).toBe("INVALID_CREDENTIALS");
      const session = await api.call("POST", "/api/v1/sessions", null, { email: "login@api.test", password: "correct horse battery staple" });
      expect(session.status).toBe(201);
      const me = await api.call("GET", "/api/v1/me", session.json.token);
      expect(me.json).toMatchObject({ operatorId: operator.id, role: "auditor", virtualServerId: t.virtualServerId });
    });

    it("audits logins and, after ten failures for one email, refuses even the right password for a while", async () => {
      await core.services.operators.create(installerPrincipal, { email: "guessed@api.test", name: "Guessed", role: "auditor", virtualServerId: t.virtualServerId, password: "the real password" });
      for (let i = 0; i < 10; i++) {
        const wrong = await api.call("POST", "/api/v1/sessions", null, { email: "guessed@api.test", password: `guess ${i}` });
        expect(wrong.json.error.code).toBe("INVALID_CREDENTIALS");
      }
      const limited = await api.call("POST", "/api/v1/sessions", null, { email: "guessed@api.test", password: "the real password" });
      expect(limited.status).toBe(429);
      expect(limited.json.error.code).toBe("RATE_LIMITED");
      const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=operator.login_failed&limit=100`, key);
      expect(trail.json.items.filter((r: { actor: string }) => r.actor === "operator:guessed@api.test")).toHaveLength(10);
      await core.services.operators.create(installerPrincipal, { email: "unharmed@api.test", name: "Unharmed", role: "auditor", virtualServerId: t.virtualServerId, password: "another password" });
      const other = await api.call("POST", "/api/v1/sessions", null, { email: "unharmed@api.test", password: "another password" });
      expect(other.status).toBe(201);
      const logins = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=operator.login`, key);
      expect(logins.json.items.length).toBeGreaterThanOrEqual(1);
    });

    it("stops guesses sent all at once at the limit, and on PostgreSQL counts them on every node together", async () => {
      await core.services.operators.create(installerPrincipal, { email: "burst@api.test", name: "Burst", role: "auditor", virtualServerId: t.virtualServerId, password: "the burst password" });
      const attempt = (email: string, password: string) =>
        core.services.operators.createSession(email, password, "198.51.100.60").then(
          () => "ok",
          (error: { code?: string }) => error.code,
        );
      const outcomes = await Promise.all(Array.from({ length: 25 }, (_, i) => attempt("burst@api.test", `guess ${i}`)));
      expect(outcomes.filter((code) => code === "INVALID_CREDENTIALS")).toHaveLength(10);
      expect(outcomes.filter((code) => code === "RATE_LIMITED")).toHaveLength(15);
      // The fifteen refused attempts were not made: the address (limit 50) has forty left.
      for (let i = 0; i < 40; i++) expect(await attempt(`nobody-${i}@api.test`, "guess")).toBe("INVALID_CREDENTIALS");
      expect(await attempt("nobody-40@api.test", "guess")).toBe("RATE_LIMITED");
      // Once the window has ended, the right password gets in.
      core.clock.advance(15 * 60 * 1000 + 1);
      expect(await attempt("burst@api.test", "the burst password")).toBe("ok");

      // A second node over the same database (PostgreSQL; a SQLite server is one process).
      if (kind !== "postgres") return;
      await core.services.operators.create(installerPrincipal, { email: "spread@api.test", name: "Spread", role: "auditor", virtualServerId: t.virtualServerId, password: "the spread password" });
      const other = openStorage(core.database.target);
      try {
        const node2 = createServices(other, core.services.keyring, { clock: core.clock });
        const onNode = (node: number, password: string) =>
          (node === 1 ? core.services : node2).operators.createSession("spread@api.test", password, `198.51.100.${node}`).then(
            () => "ok",
            (error: { code?: string }) => error.code,
          );
        // Five failures on each node: together the email's ten.
        for (let i = 0; i < 10; i++) expect(await onNode(1 + (i % 2), `guess ${i}`)).toBe("INVALID_CREDENTIALS");
        expect(await onNode(1, "the spread password")).toBe("RATE_LIMITED");
        expect(await onNode(2, "the spread password")).toBe("RATE_LIMITED");
      } finally {
        await other.close();
      }
    });

    it("stops accepting a session token once it expires", async () => {
      await core.services.operators.create(installerPrincipal, { email: "short@api.test", name: "Short", role: "auditor", virtualServerId: t.virtualServerId, password: "a long enough password" });
      const session = await api.call("POST", "/api/v1/sessions", null, { email: "short@api.test", password: "a long enough password" });
      core.clock.advance(13 * 3600 * 1000);
      expect((await api.call("GET", "/api/v1/me", session.json.token)).status).toBe(401);
    });
  });

  describe("users", () => {
    const users = () => `/api/v1/virtual-servers/${t.virtualServerId}/users`;

    it("creates, reads, updates and deletes a user, refusing a duplicate", async () => {
      const created = await api.call("POST", users(), key, { userId: "ursula", firstName: "Ursula", lastName: "User", email: "ursula@api.test", groups: ["vpn", "staff", "vpn"] });
      expect(created.status).toBe(201);
      expect(created.json).toMatchObject({ userId: "ursula", groups: ["staff", "vpn"], tokens: [] });
      const duplicate = await api.call("POST", users(), key, { userId: "ursula" });
      expect(duplicate.status).toBe(409);
      expect(duplicate.json.error.code).toBe("USER_EXISTS");
      const updated = await api.call("PATCH", `${users()}/ursula`, key, { email: "u@api.test", groups: ["finance"] });
      expect(updated.json).toMatchObject({ email: "u@api.test", groups: ["finance"] });
      expect((await api.call("DELETE", `${users()}/ursula`, key)).status).toBe(204);
      expect((await api.call("GET", `${users()}/ursula`, key)).json.error.code).toBe("USER_NOT_FOUND");
    });

    it("refuses to delete a user who still holds a token", async () => {
      await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "holder-del" });
      const response = await api.call("DELETE", `${users()}/holder-del`, key);
      expect(response.status).toBe(409);
      expect(response.json.error.code).toBe("USER_HAS_TOKENS");
    });

    it("searches by prefix, group and token holding, a page at a time without overlap", async () => {
      for (let i = 0; i < 25; i++) {
        await api.call("POST", users(), key, { userId: `search-${String(i).padStart(2, "0")}`, groups: i % 2 === 0 ? ["even"] : ["odd"] });
      }
      await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "search-03" });
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { json: { items: Array<{ userId: string }>; nextCursor: string | null } } = await api.call(
          "GET",
          `${users()}?q=search-&limit=10${cursor ? `&cursor=${cursor}` : ""}`,
          key,
        );
        seen.push(...page.json.items.map((u) => u.userId));
        cursor = page.json.nextCursor;
      } while (cursor);
      expect(seen).toHaveLength(25);
      expect(new Set(seen).size).toBe(25);
      const even = await api.call("GET", `${users()}?q=search-&group=even&limit=100`, key);
      expect(even.json.items).toHaveLength(13);
      const holders = await api.call("GET", `${users()}?q=search-&hasToken=true`, key);
      expect(holders.json.items.map((u: { userId: string }) => u.userId)).toEqual(["search-03"]);
      expect(holders.json.items[0].tokens).toHaveLength(1);
      const groups = await api.call("GET", `/api/v1/virtual-servers/${t.virtualServerId}/groups`, key);
      expect(groups.json.items).toEqual(expect.arrayContaining([{ name: "even", members: 13 }, { name: "odd", members: 12 }]));
    });

    it("finds users by the start of any field in any case, Unicode too, with LIKE's wildcards taken literally", async () => {
      const people = [
        { userId: "ci-asmith", firstName: "Ann", lastName: "Smith", email: "Ann.Smith@Example.test" },
        { userId: "ci-olund", firstName: "Åsa", lastName: "Ölund", email: "" },
        { userId: "ci-%done", firstName: "", lastName: "", email: "" },
        { userId: "ci-x_y", firstName: "", lastName: "", email: "" },
        { userId: "ci-greek", firstName: "Οδυσσέας", lastName: "Zed\u001fSmith", email: "" },
      ];
      for (const person of people) expect((await api.call("POST", users(), key, person)).status).toBe(201);
      const found = async (q: string) => (await api.call("GET", `${users()}?q=${encodeURIComponent(q)}&limit=100`, key)).json.items.map((u: { userId: string }) => u.userId);
      expect(await found("smith")).toEqual(["ci-asmith"]);
      expect(await found("ANN")).toEqual(["ci-asmith"]);
      expect(await found("ann.smith@EXAMPLE")).toEqual(["ci-asmith"]);
      expect(await found("CI-ASM")).toEqual(["ci-asmith"]);
      expect(await found("öl")).toEqual(["ci-olund"]);
      expect(await found("ÅSA")).toEqual(["ci-olund"]);
      // Typed in capitals, the prefix ends in a final sigma.
      expect(await found("ΟΔΥΣ")).toEqual(["ci-greek"]);
      // A control character in a name does not start a field.
      expect(await found("smith")).toEqual(["ci-asmith"]);
      // Only the start of a field counts.
      expect(await found("mith")).toEqual([]);
      // % and _ are the text typed, not wildcards.
      expect(await found("ci-%")).toEqual(["ci-%done"]);
      expect(await found("ci-x_")).toEqual(["ci-x_y"]);
      expect(await found("ci-_")).toEqual([]);
      expect(await found("ci-\\")).toEqual([]);
      // Control characters are dropped on both sides, NUL too (PostgreSQL text could not hold one).
      expect(await found("ci-x\0_")).toEqual(["ci-x_y"]);
      expect(await found("\0")).toEqual([]);
      // A change of name is found by its new name.
      expect((await api.call("PATCH", `${users()}/ci-olund`, key, { lastName: "Nyström" })).status).toBe(200);
      expect(await found("NYSTR")).toEqual(["ci-olund"]);
      expect(await found("ölund")).toEqual([]);
    });

    it("imports users from CSV keeping the good rows and reporting each bad one with its line", async () => {
      const csv = [
        "userId,firstName,lastName,email,groups",
        "imp-1,Ann,One,ann@api.test,vpn;staff",
        "imp-2,Ben,Two,not-an-email,staff",
        ",No,Id,noid@api.test,",
        "imp-1,Ann,Again,ann2@api.test,",
        "imp-3,Cat,Three,cat@api.test,",
        'imp-4,"Dee ""Quoted""",Four,dee@api.test,vpn',
      ].join("\n");
      const response = await api.call("POST", `${users()}/import`, key, { csv });
      expect(response.status).toBe(200);
      expect(response.json.imported).toBe(3);
      expect(response.json.failed).toBe(3);
      expect(response.json.errors.map((e: { line: number; code: string }) => [e.line, e.code])).toEqual([
        [3, "VALIDATION_FAILED"],
        [4, "VALIDATION_FAILED"],
        [5, "USER_EXISTS"],
      ]);
      expect((await api.call("GET", `${users()}/imp-4`, key)).json).toMatchObject({ firstName: 'Dee "Quoted"', groups: ["vpn"] });
      const again = await api.call("POST", `${users()}/import`, key, { csv });
      expect(again.json.imported).toBe(0);
      // Rows already in the database are found when their batch is written, yet the
      // report lists every error in file order.
      expect(again.json.errors.map((e: { line: number; code: string }) => [e.line, e.code])).toEqual([
        [2, "USER_EXISTS"],
        [3, "VALIDATION_FAILED"],
        [4, "VALIDATION_FAILED"],
        [5, "USER_EXISTS"],
        [6, "USER_EXISTS"],
        [7, "USER_EXISTS"],
      ]);
    });

    it("refuses a CSV without a user id column and imports nothing", async () => {
      const before = await count("users");
      const response = await api.call("POST", `${users()}/import`, key, { csv: "name,email\nx,x@api.test\n" });
      expect(response.status).toBe(400);
      expect(response.json.error.code).toBe("CSV_INVALID");
      expect(await count("users")).toBe(before);
    });
  });

  describe("tokens", () => {
    it("adds tokens with generated serials that carry a valid check digit", async () => {
      const response = await api.call("POST", "/api/v1/tokens", key, { virtualServerId: t.virtualServerId, type: "mobile", count: 30 });
      expect(response.status).toBe(201);
      expect(response.json.count).toBe(30);
      for (const serial of response.json.serials as string[]) expect(serial).toMatch(/^MP\d{10}$/);
      const one = await api.call("GET", `/api/v1/tokens/${response.json.firstSerial}`, key);
      expect(one.json).toMatchObject({ type: "mobile", state: "inventory", user: null, device: null, hasKey: false });
    });

    it("lists by state, type, serial prefix, user, app and Push OTP state, a page at a time", async () => {
      const vs = await createTenant(core.services, "Listing");
      await core.services.tokens.add(installerPrincipal, { virtualServerId: vs.virtualServerId, type: "email", count: 7 });
      const held = await placeTokenInState(core.services, vs.virtualServerId, "active", { userId: "lister" });
      const list = (query: string) => api.call("GET", `/api/v1/tokens?virtualServerId=${vs.virtualServerId}&${query}`, vs.apiKeys.auditor);
      expect((await list("type=email")).json.items).toHaveLength(7);
      expect((await list("state=active")).json.items.map((x: { serial: string }) => x.serial)).toEqual([held]);
      expect((await list("userId=lister")).json.items.map((x: { serial: string }) => x.serial)).toEqual([held]);
      expect((await list("userId=nobody")).json.items).toEqual([]);
      expect((await list("app=tessera&pushOtp=enabled")).json.items.map((x: { serial: string }) => x.serial)).toEqual([held]);
      expect((await list("app=otp-app")).json.items).toEqual([]);
      expect((await list(`serialPrefix=${held.slice(0, 11)}`)).json.items.map((x: { serial: string }) => x.serial)).toEqual([held]);
      const first = await list("limit=5");
      const second = await list(`limit=5&cursor=${first.json.nextCursor}`);
      expect(first.json.items).toHaveLength(5);
      expect(second.json.items).toHaveLength(3);
      expect(second.json.nextCursor).toBeNull();
      expect(second.json.items[0].serial > first.json.items[4].serial).toBe(true);
      const device = (await list("state=active")).json.items[0].device;
      expect(device).toMatchObject({ app: "tessera", target: "Android 15", pushAtEnrollment: "enabled", pushNow: "enabled" });
    });

    it("answers a mistyped serial with SERIAL_INVALID and an unknown one with TOKEN_NOT_FOUND", async () => {
      const typo = await api.call("GET", "/api/v1/tokens/MP0000000012", key);
      expect(typo.status).toBe(400);
      expect(typo.json.error.code).toBe("SERIAL_INVALID");
      const spaces = await api.call("POST", "/api/v1/tokens/bad%20serial/suspend", key, {});
      expect(spaces.json.error.code).toBe("SERIAL_INVALID");
      const unknown = await api.call("GET", "/api/v1/tokens/MP9999999999", key);
      expect(unknown.status).toBe(404);
      expect(unknown.json.error.code).toBe("TOKEN_NOT_FOUND");
      expect((await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&cursor=not-a-cursor`, key)).json.error.code).toBe("CURSOR_INVALID");
    });

    it("imports a PSKC file and refuses a seed file with a broken row whole", async () => {
      const pskc = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo><Manufacturer>Manufacturer</Manufacturer><SerialNo>API-PSKC-1</SerialNo></DeviceInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <AlgorithmParameters><ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret><Counter><PlainValue>0</PlainValue></Counter></Data>
    </Key>
  </KeyPackage>
</KeyContainer>`;
      const imported = await api.call("POST", "/api/v1/tokens/import", key, { virtualServerId: t.virtualServerId, format: "pskc", content: pskc });
      expect(imported.status).toBe(201);
      expect((await api.call("GET", "/api/v1/tokens/API-PSKC-1", key)).json).toMatchObject({ type: "hardware", hasKey: true, otp: { mode: "hotp", digits: 8 } });
      const again = await api.call("POST", "/api/v1/tokens/import", key, { virtualServerId: t.virtualServerId, format: "pskc", content: pskc });
      expect(again.json.error.code).toBe("SERIAL_TAKEN");

      const before = await count("tokens");
      const csv = "serial,seed,type\nAPI-CSV-1,3132333435363738393031323334353637383930,totp\nAPI-CSV-2,zz-not-a-seed,totp\n";
      const refused = await api.call("POST", "/api/v1/tokens/import", key, { virtualServerId: t.virtualServerId, format: "csv", content: csv });
      expect(refused.status).toBe(400);
      expect(refused.json.error.code).toBe("SEED_FILE_INVALID");
      expect(refused.json.error.message).toContain("line 3");
      expect(await count("tokens")).toBe(before);
    });

    it("never returns key material", async () => {
      const response = await api.call("GET", "/api/v1/tokens/API-PSKC-1", key);
      expect(response.body).not.toMatch(/key_ciphertext|MTIzNDU2|3132333435/);
    });
  });

  describe("allocation between a service provider and its children", () => {
    it("moves unassigned tokens to a child and back, within the child's capacity", async () => {
      const sp = await createTenant(core.services, "Provider");
      const child = await createTenant(core.services, "Customer", { parentId: sp.virtualServerId, capacity: 5 });
      await core.services.tokens.add(installerPrincipal, { virtualServerId: sp.virtualServerId, type: "mobile", count: 10 });
      const spKey = sp.apiKeys.admin;
      const allocated = await api.call("POST", "/api/v1/tokens/allocate", spKey, { fromVirtualServerId: sp.virtualServerId, toVirtualServerId: child.virtualServerId, type: "mobile", count: 4 });
      expect(allocated.status).toBe(200);
      expect(allocated.json.count).toBe(4);
      const childTokens = await api.call("GET", `/api/v1/tokens?virtualServerId=${child.virtualServerId}`, child.apiKeys.auditor);
      expect(childTokens.json.items).toHaveLength(4);

      const held = await placeTokenInState(core.services, sp.virtualServerId, "active");
      const tokensBefore = await count("tokens");
      const auditBefore = await count("audit_log");
      const over = await api.call("POST", "/api/v1/tokens/allocate", spKey, { fromVirtualServerId: sp.virtualServerId, toVirtualServerId: child.virtualServerId, type: "mobile", count: 2 });
      expect(over.status).toBe(409);
      expect(over.json.error.code).toBe("CAPACITY_EXCEEDED");
      const short = await api.call("POST", "/api/v1/tokens/allocate", spKey, { fromVirtualServerId: sp.virtualServerId, toVirtualServerId: child.virtualServerId, type: "email", count: 1 });
      expect(short.json.error.code).toBe("INVENTORY_SHORT");
      const notMovable = await api.call("POST", "/api/v1/tokens/allocate", spKey, { fromVirtualServerId: sp.virtualServerId, toVirtualServerId: child.virtualServerId, serials: [held] });
      expect(notMovable.json.error.code).toBe("TOKENS_NOT_MOVABLE");
      const sideways = await api.call("POST", "/api/v1/tokens/allocate", spKey, { fromVirtualServerId: child.virtualServerId, toVirtualServerId: sp.virtualServerId, type: "mobile", count: 1 });
      expect(sideways.json.error.code).toBe("NOT_A_CHILD");
      expect((await api.call("GET", `/api/v1/tokens?virtualServerId=${child.virtualServerId}`, child.apiKeys.auditor)).json.items).toHaveLength(4);
      expect(await count("audit_log")).toBe(auditBefore);

      const back = await api.call("POST", "/api/v1/tokens/deallocate", spKey, {
        fromVirtualServerId: child.virtualServerId,
        toVirtualServerId: sp.virtualServerId,
        serials: allocated.json.serials.slice(0, 2),
      });
      expect(back.json.count).toBe(2);
      expect(await count("tokens")).toBe(tokensBefore);
      const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${sp.virtualServerId}&serial=${allocated.json.serials[0]}`, spKey);
      expect(trail.json.items.map((r: { action: string }) => r.action)).toEqual(["token.deallocate"]);
    });
  });

  describe("policy", () => {
    it("inherits from the parent unless overridden, and null returns a field to inheritance", async () => {
      const sp = await createTenant(core.services, "Policy parent");
      const child = await createTenant(core.services, "Policy child", { parentId: sp.virtualServerId });
      const path = (vs: TestTenant) => `/api/v1/virtual-servers/${vs.virtualServerId}/policy`;
      await api.call("PATCH", path(sp), sp.apiKeys.admin, { otpDigits: 8, lockThreshold: 5 });
      const inherited = await api.call("GET", path(child), child.apiKeys.auditor);
      expect(inherited.json.effective).toMatchObject({ otpDigits: 8, lockThreshold: 5, enrollmentLifetimeDays: 7 });
      expect(inherited.json.source.otpDigits).toBe(sp.virtualServerId);
      await api.call("PATCH", path(child), child.apiKeys.admin, { lockThreshold: 10 });
      expect((await api.call("GET", path(child), child.apiKeys.admin)).json.effective.lockThreshold).toBe(10);
      const reset = await api.call("PATCH", path(child), child.apiKeys.admin, { lockThreshold: null });
      expect(reset.json.effective.lockThreshold).toBe(5);
      expect(reset.json.overrides).toEqual({});
    });

    it("refuses values outside the policy's ranges and changes nothing", async () => {
      const path = `/api/v1/virtual-servers/${t.virtualServerId}/policy`;
      const before = (await api.call("GET", path, key)).json;
      for (const body of [{ otpDigits: 7 }, { lockThreshold: 0 }, { allowedApps: [] }, { allowedApps: ["other-app"] }, { unknownField: 1 }]) {
        const response = await api.call("PATCH", path, key, body);
        expect(response.status).toBe(400);
        expect(response.json.error.code).toBe("VALIDATION_FAILED");
      }
      expect((await api.call("GET", path, key)).json).toEqual(before);
    });
  });

  describe("audit trail", () => {
    it("answers queries by token, user, operator, action and time, newest first, with paging", async () => {
      const vs = await createTenant(core.services, "Audited");
      const serial = await placeTokenInState(core.services, vs.virtualServerId, "active", { userId: "audited-user" });
      await core.services.tokenLifecycle.suspend(vs.principals.helpdesk, serial, "lost phone?");
      await core.services.tokenLifecycle.reactivate(vs.principals.operator, serial, "found it");
      const audit = (query: string) => api.call("GET", `/api/v1/audit?virtualServerId=${vs.virtualServerId}&${query}`, vs.apiKeys.auditor);
      const byToken = await audit(`serial=${serial}`);
      expect(byToken.json.items.map((r: { action: string }) => r.action)).toEqual(["token.reactivate", "token.suspend"]);
      expect(byToken.json.items[1]).toMatchObject({ fromState: "active", toState: "suspended", reason: "lost phone?", actor: vs.principals.helpdesk.actor });
      const byUser = await audit("userId=audited-user");
      expect(byUser.json.items.length).toBeGreaterThanOrEqual(3);
      const byOperator = await audit(`operatorId=${vs.principals.operator.operatorId}`);
      expect(byOperator.json.items.map((r: { action: string }) => r.action)).toEqual(["token.reactivate"]);
      const future = await audit(`from=${new Date(core.clock.nowMs() + 60_000).toISOString()}`);
      expect(future.json.items).toEqual([]);
      const first = await audit("limit=2");
      const next = await audit(`limit=2&cursor=${first.json.nextCursor}`);
      expect(next.json.items[0].seq).toBeLessThan(first.json.items[1].seq);
    });

    // PostgreSQL links records into the chain after their commit; SQLite as it writes them.
    if (kind === "postgres")
      it("shows the trail as it stands while a record cannot be linked, and the record once it can", async () => {
        const vs = await createTenant(core.services, "Unlinked");
        const serial = await placeTokenInState(core.services, vs.virtualServerId, "active", { userId: "unlinked-user" });
        const audit = () => api.call("GET", `/api/v1/audit?virtualServerId=${vs.virtualServerId}&serial=${serial}`, vs.apiKeys.auditor);
        const before = await audit();
        // A chain that refuses the next record, as a full disk or a broken constraint would.
        await sql`alter table audit_log add constraint refuse_unlinked check (reason is distinct from 'cannot be linked yet') not valid`.execute(core.storage.db);
        try {
          await core.services.tokenLifecycle.suspend(vs.principals.helpdesk, serial, "cannot be linked yet");
          const during = await audit();
          expect(during.status).toBe(200);
          expect(during.json.items).toEqual(before.json.items);
        } finally {
          await sql`alter table audit_log drop constraint refuse_unlinked`.execute(core.storage.db);
        }
        const after = await audit();
        expect(after.json.items[0]).toMatchObject({ action: "token.suspend", reason: "cannot be linked yet" });
        expect(after.json.items.slice(1)).toEqual(before.json.items);
      });
  });

  describe("bad input", () => {
    it("answers malformed JSON, unknown fields, wrong types and a wrong media type with a clear code, changing nothing", async () => {
      const before = [await count("users"), await count("tokens"), await count("audit_log")];
      const url = `/api/v1/virtual-servers/${t.virtualServerId}/users`;
      const malformed = await api.call("POST", url, key, '{"userId": "x",');
      expect([malformed.status, malformed.json.error.code]).toEqual([400, "MALFORMED_JSON"]);
      const unknown = await api.call("POST", url, key, { userId: "x", isAdmin: true });
      expect([unknown.status, unknown.json.error.code]).toEqual([400, "VALIDATION_FAILED"]);
      expect(unknown.json.error.message).toContain("isAdmin");
      const wrongType = await api.call("POST", "/api/v1/tokens", key, { virtualServerId: t.virtualServerId, type: "mobile", count: "5" });
      expect(wrongType.json.error.code).toBe("VALIDATION_FAILED");
      const tooMany = await api.call("POST", "/api/v1/tokens", key, { virtualServerId: t.virtualServerId, type: "hardware", count: 1 });
      expect(tooMany.json.error.code).toBe("VALIDATION_FAILED");
      const media = await api.call("POST", url, key, "userId=x", { "content-type": "application/x-www-form-urlencoded" });
      expect([media.status, media.json.error.code]).toEqual([415, "UNSUPPORTED_MEDIA_TYPE"]);
      const badQuery = await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&state=bogus`, key);
      expect(badQuery.json.error.code).toBe("VALIDATION_FAILED");
      expect([await count("users"), await count("tokens"), await count("audit_log")]).toEqual(before);
    });

    it("refuses an oversize body with 413 before reading it all", async () => {
      const csv = "userId\n" + "x".repeat(100 * 1024);
      const response = await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users/import`, key, { csv });
      expect([response.status, response.json.error.code]).toEqual([413, "BODY_TOO_LARGE"]);
    });

    it("answers an unknown route with ROUTE_NOT_FOUND", async () => {
      const response = await api.call("GET", "/api/v1/nothing-here", key);
      expect([response.status, response.json.error.code]).toEqual([404, "ROUTE_NOT_FOUND"]);
    });
  });
});

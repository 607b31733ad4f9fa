import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, expect, it } from "vitest";
import { buildHttpApp } from "../../http/app.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { createTenant, type TestTenant } from "../../testing/fixtures.js";
import { queueMails, type MailToQueue } from "./outbox.js";
import { defaultEnrollmentTemplate, renderEnrollmentMail } from "./templates.js";

describeEachDatabase("mail API", (kind) => {
  let core: TestCore;
  let app: FastifyInstance;
  let acme: TestTenant;
  let acmeChild: TestTenant;
  let globex: TestTenant;
  const acmeMailIds: string[] = [];
  let sentId: string;

  async function call(method: "GET" | "PUT", url: string, key: string, body?: unknown) {
    const response = await app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return { status: response.statusCode, json: response.json() as any };
  }

  function enrollment(tenant: TestTenant, name: string): MailToQueue {
    return {
      virtualServerId: tenant.virtualServerId,
      kind: "enrollment",
      to: `${name}@example.com`,
      enrollmentId: `enr_${name}`,
      ...renderEnrollmentMail(defaultEnrollmentTemplate, {
        firstName: name,
        lastName: "Tester",
        userId: name,
        virtualServerName: "Acme",
        enrollUrl: `http://tessera.test/enroll/CODE${name.toUpperCase()}`,
        expiresAt: core.clock.nowMs() + 7 * 86_400_000,
        serial: "MP0000000001",
      }),
    };
  }

  beforeAll(async () => {
    core = await createTestCore(kind);
    acme = await createTenant(core.services, "Acme");
    acmeChild = await createTenant(core.services, "Acme Lyon", { parentId: acme.virtualServerId });
    globex = await createTenant(core.services, "Globex");
    app = await buildHttpApp(core.services, { bodyLimitBytes: 1024 * 1024, logLevel: "silent" });
    await app.ready();

    const deps = { keyring: core.services.keyring, clock: core.clock };
    const db = core.storage.db;
    for (const name of ["anna", "bernard", "chloe"]) {
      const [entry] = await db.transaction().execute((trx) => queueMails(trx, deps, [enrollment(acme, name)]));
      acmeMailIds.push(entry!.id);
      core.clock.advance(1000);
    }
    await db.transaction().execute((trx) => queueMails(trx, deps, [enrollment(acmeChild, "david"), enrollment(globex, "emma")]));
    sentId = acmeMailIds[0]!;
    await db.updateTable("outbox").set({ status: "sent", sent_at: core.clock.nowMs(), body_ciphertext: null, body_key_id: null }).where("id", "=", sentId).execute();
  });
  afterAll(async () => {
    await app.close();
    await core.close();
  });

  it("lists a virtual server's outbox newest first, with the text and link of unsent mail only", async () => {
    const { status, json } = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}`, acme.apiKeys.operator);
    expect(status).toBe(200);
    expect(json.items.map((item: { to: string }) => item.to)).toEqual(["chloe@example.com", "bernard@example.com", "anna@example.com"]);
    const [chloe, , anna] = json.items;
    expect(chloe).toMatchObject({
      kind: "enrollment",
      status: "queued",
      attempts: 0,
      subject: "Set up your Acme login token",
      enrollUrl: "http://tessera.test/enroll/CODECHLOE",
      lastError: null,
      sentAt: null,
    });
    expect(chloe.text).toContain("http://tessera.test/enroll/CODECHLOE");
    expect(chloe.nextAttemptAt).toMatch(/^2026-01-01T/);
    expect(anna).toMatchObject({ id: sentId, status: "sent", nextAttemptAt: null });
    expect(anna).not.toHaveProperty("text");
    expect(anna).not.toHaveProperty("enrollUrl");
    expect(json.nextCursor).toBeNull();
  });

  it("filters by status and pages with a cursor", async () => {
    const sent = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}&status=sent`, acme.apiKeys.admin);
    expect(sent.json.items.map((item: { id: string }) => item.id)).toEqual([sentId]);

    const first = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}&limit=2`, acme.apiKeys.admin);
    expect(first.json.items.map((item: { to: string }) => item.to)).toEqual(["chloe@example.com", "bernard@example.com"]);
    const second = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}&limit=2&cursor=${first.json.nextCursor}`, acme.apiKeys.admin);
    expect(second.json).toMatchObject({ items: [{ to: "anna@example.com" }], nextCursor: null });

    const bad = await call("GET", "/api/v1/outbox?cursor=bm90LWEtY3Vyc29y", acme.apiKeys.admin);
    expect(bad).toMatchObject({ status: 400, json: { error: { code: "CURSOR_INVALID" } } });
  });

  it("without a virtual server lists the operator's scope: children for a provider's admin, nothing of other tenants", async () => {
    const admin = await call("GET", "/api/v1/outbox", acme.apiKeys.admin);
    expect(admin.json.items.map((item: { to: string }) => item.to).sort()).toEqual(["anna@example.com", "bernard@example.com", "chloe@example.com", "david@example.com"]);
    const operator = await call("GET", "/api/v1/outbox", acme.apiKeys.operator);
    expect(operator.json.items).toHaveLength(3);
    const other = await call("GET", "/api/v1/outbox", globex.apiKeys.operator);
    expect(other.json.items.map((item: { to: string }) => item.to)).toEqual(["emma@example.com"]);
  });

  it("answers 404 to another tenant's operator and 403 to helpdesk and auditors, who may not see enrollment links", async () => {
    const stranger = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}`, globex.apiKeys.operator);
    expect(stranger).toMatchObject({ status: 404, json: { error: { code: "VIRTUAL_SERVER_NOT_FOUND" } } });
    const child = await call("GET", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}`, acmeChild.apiKeys.admin);
    expect(child.status).toBe(404);
    for (const role of ["helpdesk", "auditor"] as const) {
      for (const url of ["/api/v1/outbox", `/api/v1/outbox?virtualServerId=${acme.virtualServerId}`]) {
        expect(await call("GET", url, acme.apiKeys[role])).toMatchObject({ status: 403, json: { error: { code: "FORBIDDEN" } } });
      }
    }
    const anonymous = await app.inject({ method: "GET", url: "/api/v1/outbox" });
    expect(anonymous.statusCode).toBe(401);
  });

  it("reads, sets, refuses and resets a virtual server's enrollment template", async () => {
    const url = `/api/v1/virtual-servers/${acmeChild.virtualServerId}/mail-templates/enrollment`;
    const initial = await call("GET", url, acmeChild.apiKeys.auditor);
    expect(initial).toMatchObject({ status: 200, json: { source: "default", kind: "enrollment" } });

    const template = { subject: "Acme Lyon: token {{serial}}", text: "Bonjour {{firstName}}: {{enrollUrl}}", html: '<a href="{{enrollUrl}}">Go</a>' };
    const saved = await call("PUT", url, acme.apiKeys.admin, template);
    expect(saved).toMatchObject({ status: 200, json: { ...template, source: "own", virtualServerId: acmeChild.virtualServerId } });
    expect((await call("GET", url, acmeChild.apiKeys.helpdesk)).json.subject).toBe(template.subject);

    const invalid = await call("PUT", url, acme.apiKeys.admin, { ...template, text: "{{enrollUrl}} {{prenom}}" });
    expect(invalid).toMatchObject({ status: 400, json: { error: { code: "TEMPLATE_INVALID", details: { problems: [expect.stringContaining("{{prenom}}")] } } } });
    const extra = await call("PUT", url, acme.apiKeys.admin, { ...template, from: "x@example.com" });
    expect(extra).toMatchObject({ status: 400, json: { error: { code: "VALIDATION_FAILED" } } });

    const reset = await call("PUT", url, acme.apiKeys.admin, null);
    expect(reset).toMatchObject({ status: 200, json: { source: "default" } });
  });

  it("hides templates from other tenants (404) and lets only admins change them (403)", async () => {
    const url = `/api/v1/virtual-servers/${acme.virtualServerId}/mail-templates/enrollment`;
    const template = { subject: "s", text: "{{enrollUrl}}", html: "{{enrollUrl}}" };
    expect((await call("GET", url, globex.apiKeys.admin)).status).toBe(404);
    expect((await call("PUT", url, globex.apiKeys.admin, template)).status).toBe(404);
    expect((await call("GET", url, acmeChild.apiKeys.admin)).status).toBe(404);
    expect(await call("PUT", url, acme.apiKeys.operator, template)).toMatchObject({ status: 403, json: { error: { code: "FORBIDDEN" } } });
  });

  it("describes the three operations in the OpenAPI document", async () => {
    const response = await app.inject({ method: "GET", url: "/api/openapi.json" });
    const operations = Object.values(response.json().paths as Record<string, Record<string, { operationId?: string }>>).flatMap((methods) =>
      Object.values(methods).map((operation) => operation.operationId),
    );
    expect(operations).toEqual(expect.arrayContaining(["listOutbox", "getMailTemplate", "updateMailTemplate"]));
  });
});

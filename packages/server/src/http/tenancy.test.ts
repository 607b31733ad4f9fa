import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installerPrincipal, type Role } from "../modules/operators/access.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../testing/databases.js";
import { createTenant, placeTokenInState, type TestTenant } from "../testing/fixtures.js";
import { createTestApp, useTestApp, type TestApp } from "./testing-app.js";

const roles: Role[] = ["admin", "operator", "helpdesk", "auditor"];

describeEachDatabase("tenant isolation", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let a: TestTenant;
  let b: TestTenant;
  let bSerial: string;
  let child: TestTenant;
  beforeAll(async () => {
    core = await createTestCore(kind);
    api = await createTestApp(core);
    a = await createTenant(core.services, "Tenant A");
    b = await createTenant(core.services, "Tenant B");
    child = await createTenant(core.services, "A child", { parentId: a.virtualServerId });
    await core.services.users.create(installerPrincipal, b.virtualServerId, { userId: "bob", firstName: "Bob", lastName: "B", email: "bob@b.test", groups: ["vpn"] });
    bSerial = await placeTokenInState(core.services, b.virtualServerId, "active", { userId: "bob" });
  });
  afterAll(async () => {
    await api.close();
    await core.close();
  });

  for (const role of roles) {
    describe(`an ${role} of tenant A`, () => {
      it("gets 404, never 403, for every object of tenant B", async () => {
        const key = a.apiKeys[role];
        const vs = b.virtualServerId;
        const attempts: Array<[string, string, unknown?]> = [
          ["GET", `/api/v1/virtual-servers/${vs}`],
          ["PATCH", `/api/v1/virtual-servers/${vs}`, { name: "taken over" }],
          ["GET", `/api/v1/virtual-servers/${vs}/users`],
          ["GET", `/api/v1/virtual-servers/${vs}/users/bob`],
          ["PATCH", `/api/v1/virtual-servers/${vs}/users/bob`, { email: "evil@a.test" }],
          ["DELETE", `/api/v1/virtual-servers/${vs}/users/bob`],
          ["POST", `/api/v1/virtual-servers/${vs}/users`, { userId: "intruder" }],
          ["GET", `/api/v1/virtual-servers/${vs}/groups`],
          ["GET", `/api/v1/virtual-servers/${vs}/policy`],
          ["PATCH", `/api/v1/virtual-servers/${vs}/policy`, { lockThreshold: 99 }],
          ["GET", `/api/v1/tokens?virtualServerId=${vs}`],
          ["GET", `/api/v1/tokens/${bSerial}`],
          ["POST", `/api/v1/tokens/${bSerial}/suspend`, {}],
          ["POST", `/api/v1/tokens/${bSerial}/revoke`, { to: "lost", reason: "hostile" }],
          ["DELETE", `/api/v1/tokens/${bSerial}`],
          ["POST", "/api/v1/tokens", { virtualServerId: vs, type: "mobile", count: 1 }],
          ["GET", `/api/v1/audit?virtualServerId=${vs}`],
          ["GET", `/api/v1/operators?virtualServerId=${vs}`],
          ["POST", "/api/v1/operators", { email: "spy@a.test", name: "Spy", role: "admin", virtualServerId: vs }],
          ["POST", "/api/v1/virtual-servers", { name: "inside B", parentId: vs }],
        ];
        for (const [method, url, body] of attempts) {
          const response = await api.call(method, url, key, body);
          expect({ method, url, status: response.status }).toEqual({ method, url, status: 404 });
          expect(response.json.error.code).toMatch(/_NOT_FOUND$/);
        }
        const token = await core.services.tokens.get(installerPrincipal, bSerial);
        expect(token.state).toBe("active");
        expect((await core.services.users.get(installerPrincipal, vs, "bob")).email).toBe("bob@b.test");
      });

      it("lists only the virtual servers in its scope", async () => {
        const response = await api.call("GET", "/api/v1/virtual-servers", a.apiKeys[role]);
        const ids = (response.json.items as Array<{ id: string }>).map((vs) => vs.id);
        expect(ids).toContain(a.virtualServerId);
        expect(ids).not.toContain(b.virtualServerId);
        // Only the admin was given a scope that includes children.
        expect(ids.includes(child.virtualServerId)).toBe(role === "admin");
      });
    });
  }

  it("a child's admin cannot see its service provider or a sibling", async () => {
    const sibling = await createTenant(core.services, "A sibling", { parentId: a.virtualServerId });
    for (const id of [a.virtualServerId, sibling.virtualServerId]) {
      const response = await api.call("GET", `/api/v1/virtual-servers/${id}`, child.apiKeys.admin);
      expect(response.status).toBe(404);
    }
  });

  it("a child's admin cannot raise its own capacity; its service provider's admin can", async () => {
    const own = await api.call("PATCH", `/api/v1/virtual-servers/${child.virtualServerId}`, child.apiKeys.admin, { capacity: 1000 });
    expect(own.status).toBe(403);
    expect(own.json.error.code).toBe("SCOPE_ESCALATION");
    const above = await api.call("PATCH", `/api/v1/virtual-servers/${child.virtualServerId}`, a.apiKeys.admin, { capacity: 1000 });
    expect(above.status).toBe(200);
    expect(above.json.capacity).toBe(1000);
  });

  it("an admin cannot create an operator with a wider scope than its own", async () => {
    const response = await api.call("POST", "/api/v1/operators", child.apiKeys.helpdesk, {
      email: "wide@child.test",
      name: "Wide",
      role: "admin",
      virtualServerId: child.virtualServerId,
      scopeIncludesChildren: true,
    });
    expect(response.status).toBe(403);
    const childOnlyAdmin = await core.services.operators.create(installerPrincipal, {
      email: "narrow-admin@a.test",
      name: "Narrow",
      role: "admin",
      virtualServerId: a.virtualServerId,
      scopeIncludesChildren: false,
    });
    const { apiKey } = await core.services.operators.createApiKey(installerPrincipal, childOnlyAdmin.id, "t");
    const escalation = await api.call("POST", "/api/v1/operators", apiKey, {
      email: "escalated@a.test",
      name: "Escalated",
      role: "admin",
      virtualServerId: a.virtualServerId,
      scopeIncludesChildren: true,
    });
    expect(escalation.status).toBe(403);
    expect(escalation.json.error.code).toBe("SCOPE_ESCALATION");
  });
});

describeEachDatabase("role permissions inside one's own virtual server", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  useTestApp(kind, "Roles", (setting) => void ({ core, api, t } = setting));

  const matrix: Array<{ name: string; allowed: Role[]; request: (t: TestTenant, role: Role, serial: string) => [string, string, unknown?] }> = [
    { name: "list users", allowed: ["admin", "operator", "helpdesk", "auditor"], request: (t) => ["GET", `/api/v1/virtual-servers/${t.virtualServerId}/users`] },
    { name: "create a user", allowed: ["admin", "operator"], request: (t, role) => ["POST", `/api/v1/virtual-servers/${t.virtualServerId}/users`, { userId: `made-by-${role}` }] },
    { name: "add tokens", allowed: ["admin", "operator"], request: (t) => ["POST", "/api/v1/tokens", { virtualServerId: t.virtualServerId, type: "email", count: 1 }] },
    { name: "read a token", allowed: ["admin", "operator", "helpdesk", "auditor"], request: (_t, _r, serial) => ["GET", `/api/v1/tokens/${serial}`] },
    { name: "suspend a token", allowed: ["admin", "operator", "helpdesk"], request: (_t, _r, serial) => ["POST", `/api/v1/tokens/${serial}/suspend`, { reason: "phone call" }] },
    { name: "read the policy", allowed: ["admin", "operator", "helpdesk", "auditor"], request: (t) => ["GET", `/api/v1/virtual-servers/${t.virtualServerId}/policy`] },
    { name: "change the policy", allowed: ["admin"], request: (t) => ["PATCH", `/api/v1/virtual-servers/${t.virtualServerId}/policy`, { lockThreshold: 5 }] },
    { name: "read the audit trail", allowed: ["admin", "operator", "auditor"], request: (t) => ["GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}`] },
    { name: "create an operator", allowed: ["admin"], request: (t, role) => ["POST", "/api/v1/operators", { email: `new-${role}@roles.test`, name: "New", role: "auditor", virtualServerId: t.virtualServerId }] },
  ];

  for (const { name, allowed, request } of matrix) {
    for (const role of roles) {
      const may = allowed.includes(role);
      it(`${may ? "lets" : "forbids"} an ${role} ${name}`, async () => {
        const serial = await placeTokenInState(core.services, t.virtualServerId, "active");
        const [method, url, body] = request(t, role, serial);
        const response = await api.call(method, url, t.apiKeys[role], body);
        if (may) {
          expect(response.status).toBeLessThan(300);
        } else {
          expect(response.status).toBe(403);
          expect(response.json.error.code).toBe("FORBIDDEN");
          expect((await core.services.tokens.get(installerPrincipal, serial)).state).toBe("active");
        }
      });
    }
  }
});

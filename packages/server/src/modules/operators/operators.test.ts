import { expect, it } from "vitest";
import { useTestApp, type TestApp } from "../../http/testing-app.js";
import { describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { createTenant, type TestTenant } from "../../testing/fixtures.js";
import { installerPrincipal } from "./access.js";

describeEachDatabase("operators, API keys and sessions", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  useTestApp(kind, "Operators", (setting) => void ({ core, api, t } = setting));

  it("revokes an API key at once and lists keys without their secrets", async () => {
    const op = await core.services.operators.create(installerPrincipal, { email: "script@ops.test", name: "Script", role: "operator", virtualServerId: t.virtualServerId });
    const made = await api.call("POST", `/api/v1/operators/${op.id}/api-keys`, t.apiKeys.admin, { name: "nightly import" });
    expect((await api.call("GET", "/api/v1/me", made.json.apiKey)).status).toBe(200);
    const listed = await api.call("GET", `/api/v1/operators/${op.id}/api-keys`, t.apiKeys.admin);
    expect(listed.json.items).toEqual([expect.objectContaining({ id: made.json.id, name: "nightly import", revokedAt: null, lastUsedAt: expect.any(String) })]);
    expect(listed.body).not.toContain(made.json.apiKey.split(".")[1]);
    expect((await api.call("DELETE", `/api/v1/operators/${op.id}/api-keys/${made.json.id}`, t.apiKeys.admin)).status).toBe(204);
    expect((await api.call("GET", "/api/v1/me", made.json.apiKey)).status).toBe(401);
    const again = await api.call("DELETE", `/api/v1/operators/${op.id}/api-keys/${made.json.id}`, t.apiKeys.admin);
    expect(again.json.error.code).toBe("API_KEY_NOT_FOUND");
  });

  it("disabling an operator ends their sessions and keys; they cannot disable themselves", async () => {
    const op = await core.services.operators.create(installerPrincipal, { email: "leaving@ops.test", name: "Leaving", role: "helpdesk", virtualServerId: t.virtualServerId, password: "a good long password" });
    const session = await api.call("POST", "/api/v1/sessions", null, { email: "leaving@ops.test", password: "a good long password" });
    const { apiKey } = await core.services.operators.createApiKey(installerPrincipal, op.id, "k");
    const self = await api.call("PATCH", `/api/v1/operators/${op.id}`, session.json.token, { disabled: true });
    expect(self.status).toBe(403);
    const adminSelf = await api.call("PATCH", `/api/v1/operators/${t.principals.admin.operatorId}`, t.apiKeys.admin, { disabled: true });
    expect(adminSelf.json.error.code).toBe("OPERATOR_SELF_CHANGE");
    const disabled = await api.call("PATCH", `/api/v1/operators/${op.id}`, t.apiKeys.admin, { disabled: true });
    expect(disabled.json).toMatchObject({ disabled: true });
    expect((await api.call("GET", "/api/v1/me", session.json.token)).status).toBe(401);
    expect((await api.call("GET", "/api/v1/me", apiKey)).status).toBe(401);
    const login = await api.call("POST", "/api/v1/sessions", null, { email: "leaving@ops.test", password: "a good long password" });
    expect(login.json.error.code).toBe("INVALID_CREDENTIALS");
  });

  it("lets an operator change their own password, which ends their other sessions", async () => {
    await core.services.operators.create(installerPrincipal, { email: "self@ops.test", name: "Self", role: "auditor", virtualServerId: t.virtualServerId, password: "the first password" });
    const first = await api.call("POST", "/api/v1/sessions", null, { email: "self@ops.test", password: "the first password" });
    const me = await api.call("GET", "/api/v1/me", first.json.token);
    const changed = await api.call("PATCH", `/api/v1/operators/${me.json.operatorId}`, first.json.token, { password: "the second password" });
    expect(changed.status).toBe(200);
    expect((await api.call("GET", "/api/v1/me", first.json.token)).status).toBe(401);
    expect((await api.call("POST", "/api/v1/sessions", null, { email: "self@ops.test", password: "the second password" })).status).toBe(201);
    const promoted = await api.call("PATCH", `/api/v1/operators/${me.json.operatorId}`, (await api.call("POST", "/api/v1/sessions", null, { email: "self@ops.test", password: "the second password" })).json.token, { role: "admin" });
    expect(promoted.status).toBe(403);
  });

  it("logs out: the session token stops working", async () => {
    await core.services.operators.create(installerPrincipal, { email: "bye@ops.test", name: "Bye", role: "auditor", virtualServerId: t.virtualServerId, password: "see you later, ok" });
    const session = await api.call("POST", "/api/v1/sessions", null, { email: "bye@ops.test", password: "see you later, ok" });
    expect((await api.call("DELETE", "/api/v1/sessions/current", session.json.token)).status).toBe(204);
    expect((await api.call("GET", "/api/v1/me", session.json.token)).status).toBe(401);
  });

  it("keeps operators of other tenants out of reach", async () => {
    const other = await createTenant(core.services, "Other operators");
    const response = await api.call("PATCH", `/api/v1/operators/${other.principals.admin.operatorId}`, t.apiKeys.admin, { disabled: true });
    expect(response.json.error.code).toBe("OPERATOR_NOT_FOUND");
    const keys = await api.call("GET", `/api/v1/operators/${other.principals.admin.operatorId}/api-keys`, t.apiKeys.admin);
    expect(keys.status).toBe(404);
  });
});

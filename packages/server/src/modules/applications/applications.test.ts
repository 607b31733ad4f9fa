import { describe, expect, it } from "vitest";
import { useTestApp, type TestApp } from "../../http/testing-app.js";
import { describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { createTenant, type TestTenant } from "../../testing/fixtures.js";
import { addressMatcher, addressProblem, entrySpecificity, ipv6Groups, mappedIPv4 } from "./addresses.js";

describe("client addresses", () => {
  it("accepts addresses and CIDR ranges of both families and refuses anything else", () => {
    for (const good of ["10.0.0.1", "10.0.0.0/8", "0.0.0.0/0", "::1", "2001:db8::/32"]) expect(addressProblem(good)).toBeNull();
    for (const bad of ["10.0.0.0/33", "2001:db8::/129", "vpn.example.com", "10.0.0.1/8/2", "10.0.0/8", ""]) expect(addressProblem(bad)).not.toBeNull();
  });

  it("matches sources in a range, IPv4-mapped IPv6 included, and nothing outside", () => {
    const matches = addressMatcher(["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"]);
    expect(matches("10.1.200.3")).toBe(true);
    expect(matches("::ffff:10.1.0.9")).toBe(true);
    expect(matches("192.0.2.7")).toBe(true);
    expect(matches("2001:db8::42")).toBe(true);
    expect(matches("10.2.0.1")).toBe(false);
    expect(matches("192.0.2.8")).toBe(false);
    expect(matches("not an address")).toBe(false);
    // However the IPv4 address is written inside IPv6.
    expect(matches("::ffff:a01:9")).toBe(true);
    expect(matches("0:0:0:0:0:ffff:10.1.0.9")).toBe(true);
  });

  it("reads every way of writing an IPv6 address, and IPv4-mapped ones as the IPv4 address", () => {
    expect(ipv6Groups("2001:db8::5:6:7:1.2.3.4")).toEqual([0x2001, 0xdb8, 0, 5, 6, 7, 0x102, 0x304]);
    expect(ipv6Groups("::")).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(ipv6Groups("fe80::1%eth0")).toEqual([0xfe80, 0, 0, 0, 0, 0, 0, 1]);
    expect(ipv6Groups("1:2:3:4:5:6:7:8")).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(ipv6Groups("192.0.2.1")).toBeNull();
    for (const written of ["::ffff:192.0.2.10", "::FFFF:c000:20a", "0:0:0:0:0:ffff:192.0.2.10", "0::ffff:c000:020a"]) expect(mappedIPv4(written)).toBe("192.0.2.10");
    for (const other of ["::1", "::c000:20a", "64:ff9b::c000:20a", "2001:db8::ffff:c000:20a", "192.0.2.10"]) expect(mappedIPv4(other)).toBeNull();
  });

  it("ranks an entry by how much of each family it names: ::ffff:10.0.0.0/104 is a /8 for IPv4 sources", () => {
    expect(entrySpecificity("10.0.0.0/8")).toEqual({ ipv4: 8, ipv6: -1 });
    expect(entrySpecificity("192.0.2.7")).toEqual({ ipv4: 32, ipv6: -1 });
    expect(entrySpecificity("::ffff:10.0.0.0/104")).toEqual({ ipv4: 8, ipv6: 104 });
    expect(entrySpecificity("::ffff:10.0.0.1")).toEqual({ ipv4: 32, ipv6: 128 });
    expect(entrySpecificity("::/0")).toEqual({ ipv4: 0, ipv6: 0 });
    expect(entrySpecificity("::/64")).toEqual({ ipv4: 0, ipv6: 64 });
    expect(entrySpecificity("2001:db8::/32")).toEqual({ ipv4: -1, ipv6: 32 });
    expect(entrySpecificity("::1")).toEqual({ ipv4: -1, ipv6: 128 });
  });
});

describeEachDatabase("applications", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  useTestApp(kind, "Apps", (setting) => void ({ core, api, t } = setting));

  it("creates a RADIUS client with a made-up secret shown once and kept encrypted", async () => {
    const created = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "radius", virtualServerId: t.virtualServerId, name: "vpn", pushOtp: true, radiusAddresses: ["10.0.0.0/8"] });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ kind: "radius", resourceName: "vpn", pushOtp: true, pushMode: "hold", pushTimeoutSeconds: 60, radiusAddresses: ["10.0.0.0/8"] });
    expect(created.json.radiusSecret).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const row = await core.storage.db.selectFrom("applications").selectAll().where("id", "=", created.json.id).executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain(created.json.radiusSecret);
    expect(core.services.applications.radiusSecretOf(row).toString()).toBe(created.json.radiusSecret);
    const listed = await api.call("GET", `/api/v1/applications?virtualServerId=${t.virtualServerId}`, t.apiKeys.auditor);
    expect(listed.body).not.toContain(created.json.radiusSecret);
  });

  it("creates a REST client whose API key is shown once, authenticates, and stops working when rotated", async () => {
    const created = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "portal", resourceName: "Staff portal" });
    expect(created.json.apiKey).toMatch(/^tak_/);
    expect((await core.services.applications.authenticateApiKey(created.json.apiKey))?.id).toBe(created.json.id);
    const rotated = await api.call("PATCH", `/api/v1/applications/${created.json.id}`, t.apiKeys.admin, { rotateApiKey: true });
    expect(rotated.json.apiKey).not.toBe(created.json.apiKey);
    expect(await core.services.applications.authenticateApiKey(created.json.apiKey)).toBeNull();
    expect((await core.services.applications.authenticateApiKey(rotated.json.apiKey))?.id).toBe(created.json.id);
  });

  it("keeps an API key's application between logins, forgets it at once on a change made here, and reads it again after ten seconds at most", async () => {
    const created = await core.services.applications.create(t.principals.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "kept", resourceName: "Kept portal" });
    const apiKey = created.apiKey!;
    expect((await core.services.applications.authenticateApiKey(apiKey))?.resource_name).toBe("Kept portal");
    // A change that reaches the database without Tessera's notice (another tool, a lost
    // notification) is seen once the kept application is ten seconds old.
    await core.storage.db.updateTable("applications").set({ resource_name: "Changed behind our back" }).where("id", "=", created.id).execute();
    expect((await core.services.applications.authenticateApiKey(apiKey))?.resource_name).toBe("Kept portal");
    core.clock.advance(10_000);
    expect((await core.services.applications.authenticateApiKey(apiKey))?.resource_name).toBe("Changed behind our back");
    // A change through Tessera applies to the very next login.
    await core.services.applications.update(t.principals.admin, created.id, { resourceName: "Renamed portal" });
    expect((await core.services.applications.authenticateApiKey(apiKey))?.resource_name).toBe("Renamed portal");
    // A wrong secret for a kept key id is refused all the same.
    expect(await core.services.applications.authenticateApiKey(apiKey.replace(/.$/, (last) => (last === "A" ? "B" : "A")))).toBeNull();
    await core.services.applications.delete(t.principals.admin, created.id);
    expect(await core.services.applications.authenticateApiKey(apiKey)).toBeNull();
  });

  it("refuses bad addresses, short secrets and duplicate names, changing nothing", async () => {
    const base = { kind: "radius", virtualServerId: t.virtualServerId, name: "bad" };
    expect((await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { ...base, radiusAddresses: ["vpn.example.com"] })).json.error.code).toBe("VALIDATION_FAILED");
    expect((await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { ...base, radiusAddresses: ["10.0.0.1"], radiusSecret: "short" })).json.error.code).toBe("VALIDATION_FAILED");
    await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "twice" });
    expect((await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "twice" })).json.error.code).toBe("APPLICATION_NAME_TAKEN");
    const names = (await api.call("GET", `/api/v1/applications?virtualServerId=${t.virtualServerId}`, t.apiKeys.admin)).json.items.map((a: { name: string }) => a.name);
    expect(names.filter((name: string) => name === "bad" || name === "twice")).toEqual(["twice"]);
  });

  it("refuses fields of the other kind of application instead of ignoring them, and names with control characters, changing nothing", async () => {
    const rest = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "rest-only" });
    const radius = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "radius", virtualServerId: t.virtualServerId, name: "radius-only", radiusAddresses: ["10.7.0.1"] });
    const trailSize = async () => {
      await core.services.audit.settle();
      return (await core.storage.db.selectFrom("audit_log").select("seq").where("action", "=", "application.update").execute()).length;
    };
    const before = await trailSize();
    const refusals: Array<[string, Record<string, unknown>]> = [
      [rest.json.id, { radiusSecret: "a-shared-secret-for-the-nas", radiusAddresses: ["10.0.0.1"] }],
      [rest.json.id, { pushMode: "challenge" }],
      [radius.json.id, { rotateApiKey: true }],
      [rest.json.id, { resourceName: "Staff\nportal" }],
      [rest.json.id, { name: "a\u0000b" }],
    ];
    for (const [id, body] of refusals) {
      const refused = await api.call("PATCH", `/api/v1/applications/${id}`, t.apiKeys.admin, body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.json.error.code).toBe("VALIDATION_FAILED");
    }
    expect((await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "tab\there" })).json.error.code).toBe("VALIDATION_FAILED");
    // The service refuses them too (the CLI's path), before anything is written.
    await expect(core.services.applications.create(t.principals.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "cli-rest", radiusAddresses: ["10.0.0.1"] })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    expect(await trailSize()).toBe(before);
    const rows = await core.storage.db.selectFrom("applications").selectAll().where("id", "in", [rest.json.id, radius.json.id]).orderBy("name").execute();
    expect(rows.map((row) => [row.name, row.resource_name, row.push_mode, row.radius_addresses])).toEqual([
      ["radius-only", "radius-only", "hold", '["10.7.0.1"]'],
      ["rest-only", "rest-only", "hold", null],
    ]);
    expect(await core.storage.db.selectFrom("applications").select("id").where("name", "in", ["cli-rest", "tab\there"]).execute()).toEqual([]);
    // rotateApiKey: false asks for nothing, and the trail does not say it changed.
    await api.call("PATCH", `/api/v1/applications/${radius.json.id}`, t.apiKeys.admin, { rotateApiKey: false, pushOtp: true });
    await core.services.audit.settle();
    const last = await core.storage.db.selectFrom("audit_log").select("details").where("action", "=", "application.update").orderBy("seq", "desc").limit(1).executeTakeFirstOrThrow();
    expect(JSON.parse(last.details!)).toMatchObject({ changed: ["pushOtp"] });
  });

  it("gives one of several creations or renames to one name at the same moment the name, and the others APPLICATION_NAME_TAKEN", async () => {
    const created = await Promise.all([1, 2, 3, 4].map(() => api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "raced" })));
    expect(created.map((answer) => answer.status).sort()).toEqual([201, 409, 409, 409]);
    expect(created.filter((answer) => answer.status === 409).map((answer) => answer.json.error.code)).toEqual(["APPLICATION_NAME_TAKEN", "APPLICATION_NAME_TAKEN", "APPLICATION_NAME_TAKEN"]);
    const others = await Promise.all([1, 2, 3].map((i) => core.services.applications.create(t.principals.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: `to-rename-${i}` })));
    const renamed = await Promise.all(others.map((other) => api.call("PATCH", `/api/v1/applications/${other.id}`, t.apiKeys.admin, { name: "renamed-at-once" })));
    expect(renamed.map((answer) => answer.status).sort()).toEqual([200, 409, 409]);
  });

  it("sets how long a push login waits, from 10 to 300 whole seconds, refusing anything else and changing nothing", async () => {
    const created = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "radius", virtualServerId: t.virtualServerId, name: "asa", radiusAddresses: ["10.9.0.1"], pushTimeoutSeconds: 25 });
    expect(created.json).toMatchObject({ pushTimeoutSeconds: 25 });
    for (const bad of [9, 301, 12.5, "30"]) {
      const refused = await api.call("PATCH", `/api/v1/applications/${created.json.id}`, t.apiKeys.admin, { pushTimeoutSeconds: bad });
      expect(refused.json.error.code, String(bad)).toBe("VALIDATION_FAILED");
      expect((await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: `bad-${bad}`, pushTimeoutSeconds: bad })).json.error.code).toBe("VALIDATION_FAILED");
    }
    // The service refuses it too, for callers other than the API (the CLI), as it refuses
    // bad addresses, short secrets and empty names.
    const service = core.services.applications;
    await expect(service.update(t.principals.admin, created.json.id, { pushTimeoutSeconds: 0 })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    await expect(service.update(t.principals.admin, created.json.id, { radiusAddresses: ["vpn.example.com"] })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    await expect(service.update(t.principals.admin, created.json.id, { radiusAddresses: [] })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    await expect(service.update(t.principals.admin, created.json.id, { radiusSecret: "short" })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    await expect(service.create(t.principals.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "  " })).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    const updated = await api.call("PATCH", `/api/v1/applications/${created.json.id}`, t.apiKeys.admin, { pushTimeoutSeconds: 300 });
    expect(updated.json).toMatchObject({ pushTimeoutSeconds: 300 });
    // The audit record names what was given, not the fields a caller left undefined.
    await service.update(t.principals.admin, created.json.id, { name: undefined, pushOtp: true, pushTimeoutSeconds: 30, radiusSecret: "a-new-secret-of-enough-length" });
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=application.update`, t.apiKeys.auditor);
    expect(trail.json.items[0].details).toEqual({ changed: ["pushOtp", "pushTimeoutSeconds"], radiusSecretChanged: true });
    await service.update(t.principals.admin, created.json.id, { pushTimeoutSeconds: 300 });
    const listed = (await api.call("GET", `/api/v1/applications?virtualServerId=${t.virtualServerId}`, t.apiKeys.admin)).json.items;
    expect(listed.filter((a: { name: string }) => a.name.startsWith("bad-"))).toEqual([]);
    expect(listed.find((a: { id: string }) => a.id === created.json.id)).toMatchObject({ pushTimeoutSeconds: 300 });
  });

  it("leaves applications to admins, and hides them from other tenants", async () => {
    const created = await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "guarded" });
    expect((await api.call("PATCH", `/api/v1/applications/${created.json.id}`, t.apiKeys.operator, { pushOtp: true })).status).toBe(403);
    expect((await api.call("GET", `/api/v1/applications?virtualServerId=${t.virtualServerId}`, t.apiKeys.helpdesk)).status).toBe(403);
    const other = await createTenant(core.services, "Other apps");
    expect((await api.call("DELETE", `/api/v1/applications/${created.json.id}`, other.apiKeys.admin)).json.error.code).toBe("APPLICATION_NOT_FOUND");
    expect((await api.call("DELETE", `/api/v1/applications/${created.json.id}`, t.apiKeys.admin)).status).toBe(204);
  });
});

import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApp } from "../../http/testing-app.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { simulatedDevice } from "../../testing/device.js";
import { createTenant, type TestTenant } from "../../testing/fixtures.js";
import { createMailTransport } from "../mail/transport.js";
import { createMailWorker, type MailWorker } from "../mail/worker.js";
import { startTestSmtpServer, type TestSmtpServer } from "../mail/test-smtp-server.js";
import { installerPrincipal } from "../operators/access.js";

const ANDROID_UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
const IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

describeEachDatabase("provisioning and self-enrollment, end to end", (kind) => {
  let core: TestCore;
  let api: Awaited<ReturnType<typeof createTestApp>>;
  let smtp: TestSmtpServer;
  let worker: MailWorker;
  let t: TestTenant;

  beforeAll(async () => {
    core = await createTestCore(kind);
    api = await createTestApp(core);
    smtp = await startTestSmtpServer();
    worker = createMailWorker({
      db: core.storage.db,
      keyring: core.services.keyring,
      clock: core.clock,
      transport: createMailTransport({ smtpUrl: smtp.url, from: "Tessera <no-reply@tessera.test>" }),
      from: "Tessera <no-reply@tessera.test>",
    });
    t = await createTenant(core.services, "Enrolling Org");
    for (const [userId, firstName] of [["ada", "Ada"], ["ben", "Ben"], ["cy", "Cy"], ["dee", "Dee"], ["eve", "Eve"], ["fay", "Fay"], ["gus", "Gus"], ["hal", "Hal"]]) {
      await core.services.users.create(installerPrincipal, t.virtualServerId, { userId: userId!, firstName: firstName!, lastName: "Test", email: `${userId}@example.test`, groups: ["staff"] });
    }
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 8 });
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "email", count: 1 });
    await core.services.tokens.importSeeds(installerPrincipal, {
      virtualServerId: t.virtualServerId,
      seeds: [{ serial: "HW-FLOW-1", secret: Buffer.from("12345678901234567890"), otpMode: "totp", digits: 6, periodSeconds: 30, algorithm: "SHA1", counter: 0 }],
    });
  });
  afterAll(async () => {
    await worker.stop();
    await smtp.close();
    await api.close();
    await core.close();
  });

  const linkFor = async (userId: string) => {
    const before = smtp.received.length;
    await worker.runOnce();
    const mail = smtp.received.slice(before).find((m) => m.envelopeTo.includes(`${userId}@example.test`)) ?? smtp.received.find((m) => m.envelopeTo.includes(`${userId}@example.test`));
    expect(mail, `a mail to ${userId}`).toBeDefined();
    const link = /http:\/\/tessera\.test\/enroll\/([A-Z2-7]{26})/.exec(mail!.parsed.text ?? "");
    expect(link).not.toBeNull();
    return { mail: mail!, url: new URL(link![0]), code: link![1]! };
  };

  it("provisions through the API, mails the link over SMTP, and the tessera app enrolls with the key agreement", async () => {
    await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "radius", virtualServerId: t.virtualServerId, name: "vpn-gw", resourceName: "Corporate VPN", pushOtp: true, radiusAddresses: ["10.0.0.0/8"] });
    await api.call("POST", "/api/v1/applications", t.apiKeys.admin, { kind: "rest", virtualServerId: t.virtualServerId, name: "intranet", pushOtp: false });
    const task = await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, { virtualServerId: t.virtualServerId, users: { userIds: ["ada"] }, tokenType: "mobile" });
    expect(task.status).toBe(201);
    expect(task.json.counts).toMatchObject({ total: 1, pending: 1 });
    const { mail, url, code } = await linkFor("ada");
    expect(mail.parsed.subject).toBeTruthy();
    expect(mail.parsed.html).toContain(url.pathname);

    const page = await api.app.inject({ method: "GET", url: url.pathname, headers: { "user-agent": ANDROID_UA } });
    expect(page.statusCode).toBe(200);
    expect(page.headers["cache-control"]).toBe("no-store");
    expect(page.headers["referrer-policy"]).toBe("no-referrer");
    expect(page.body).toContain("Install app");
    expect(page.body).toContain("<svg");
    expect(page.body).not.toMatch(/<script|(?:src|href)="https?:\/\/(?!tessera\.test)/);

    const device = await simulatedDevice(api, () => core.clock.nowMs());
    const enrolled = await device.enroll(code, true);
    expect(enrolled.status).toBe(201);
    const confirmed = await device.confirm(enrolled.json.enrollmentId, device.passcode());
    expect(confirmed.status).toBe(200);
    expect(confirmed.json).toMatchObject({ app: "tessera", pushAtEnrollment: "enabled", pushApplications: ["Corporate VPN"] });

    const token = await api.call("GET", `/api/v1/tokens/${enrolled.json.serial}`, t.apiKeys.auditor);
    expect(token.json).toMatchObject({
      state: "active",
      user: { userId: "ada" },
      hasKey: true,
      device: { app: "tessera", target: "Android 14", deviceType: "phone", appVersion: "1.0.0", pushAtEnrollment: "enabled", pushNow: "enabled" },
    });
    const after = await api.call("GET", `/api/v1/provisioning/tasks/${task.json.id}`, t.apiKeys.operator);
    expect(after.json.counts).toMatchObject({ total: 1, enrolled: 1 });

    // Autosend Passcode off in the app: the current state changes, the one at enrollment stays.
    const off = await device.settings(false);
    expect(off.status).toBe(200);
    const toggled = await api.call("GET", `/api/v1/tokens/${enrolled.json.serial}`, t.apiKeys.auditor);
    expect(toggled.json.device).toMatchObject({ pushAtEnrollment: "enabled", pushNow: "disabled" });

    // The same link cannot be used again, and the page reveals nothing.
    const reused = await api.app.inject({ method: "GET", url: url.pathname });
    expect(reused.statusCode).toBe(404);
    expect(reused.body).toContain("cannot be used");
    expect((await device.enroll(code, true)).json.error.code).toBe("ENROLLMENT_CODE_INVALID");
  });

  it("records push as disabled when the user says No Thanks, and refuses an unsigned or forged confirmation", async () => {
    await api.call("POST", "/api/v1/virtual-servers/" + t.virtualServerId + "/users/ben/provision", t.apiKeys.operator, { tokenType: "mobile", apps: ["tessera"] });
    const { code } = await linkFor("ben");
    const device = await simulatedDevice(api, () => core.clock.nowMs());
    const enrolled = await device.enroll(code, false);
    const unsigned = await api.call("POST", `/device/v1/enrollments/${enrolled.json.enrollmentId}/confirm`, null, { otp: device.passcode() });
    expect(unsigned.json.error.code).toBe("SIGNATURE_INVALID");
    const wrong = await device.confirm(enrolled.json.enrollmentId, "000000" === device.passcode() ? "111111" : "000000");
    expect(wrong.json.error.code).toBe("ENROLLMENT_OTP_WRONG");
    // Typed as the app shows it, in groups: the same passcode.
    const confirmed = await device.confirm(enrolled.json.enrollmentId, `${device.passcode().slice(0, 3)} ${device.passcode().slice(3)}`);
    expect(confirmed.json, JSON.stringify(confirmed.json)).toMatchObject({ pushAtEnrollment: "disabled" });
    const on = await device.settings(true);
    expect(on.json.pushNow).toBe("enabled");
    const token = await api.call("GET", `/api/v1/tokens/${enrolled.json.serial}`, t.apiKeys.auditor);
    expect(token.json.device).toMatchObject({ pushAtEnrollment: "disabled", pushNow: "enabled" });
  });

  it("enrolls into any OTP app from the page: the otpauth secret checked by oathtool activates the token", async () => {
    await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, { virtualServerId: t.virtualServerId, users: { userIds: ["cy"] }, tokenType: "mobile", apps: ["otp-app"] });
    const { url, code } = await linkFor("cy");
    const page = await api.app.inject({ method: "GET", url: url.pathname, headers: { "user-agent": IPHONE } });
    expect(page.body).not.toContain("Enroll in the Tessera app");
    const shown = await api.app.inject({ method: "POST", url: `/enroll/${code}/otp-app`, headers: { "user-agent": IPHONE, "content-type": "application/x-www-form-urlencoded" }, payload: "" });
    expect(shown.statusCode).toBe(200);
    const secret = /<p class="secret">([A-Z2-7]+)<\/p>/.exec(shown.body)![1]!;
    const at = new Date(core.clock.nowMs()).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const passcode = execFileSync("oathtool", ["--totp", "-b", "--now", at, secret], { encoding: "utf8" }).trim();
    // Typed as an OTP app shows it, in groups: the field's pattern lets the browser send it
    // (a browser anchors the pattern at both ends), and the server reads its digits.
    const grouped = `${passcode.slice(0, 3)} ${passcode.slice(3)}`;
    const pattern = /<input type="text" name="otp"[^>]* pattern="([^"]+)"/.exec(shown.body)![1]!;
    expect(new RegExp(`^(?:${pattern})$`, "v").test(grouped)).toBe(true);
    const done = await api.app.inject({ method: "POST", url: `/enroll/${code}/otp-app/confirm`, headers: { "content-type": "application/x-www-form-urlencoded" }, payload: `otp=${encodeURIComponent(grouped)}` });
    expect(done.statusCode, done.body).toBe(200);
    expect(done.body).toContain("is ready");
    const tokens = await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&userId=cy`, t.apiKeys.auditor);
    expect(tokens.json.items[0]).toMatchObject({ state: "active", device: { app: "otp-app", target: "iOS 17.4", deviceType: "phone", pushAtEnrollment: "not_applicable", pushNow: "not_applicable" } });
  });

  it("lets exactly one of two devices racing for one code win", async () => {
    await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, { virtualServerId: t.virtualServerId, users: { userIds: ["dee"] }, tokenType: "mobile" });
    const { code } = await linkFor("dee");
    const [a, b] = [await simulatedDevice(api, () => core.clock.nowMs()), await simulatedDevice(api, () => core.clock.nowMs())];
    const results = await Promise.all([a.enroll(code, true), b.enroll(code, true)]);
    expect(results.map((r) => r.status).sort()).toEqual([201, 409]);
    const winner = results[0]!.status === 201 ? a : b;
    const won = results.find((r) => r.status === 201)!;
    expect((await winner.confirm(won.json.enrollmentId, winner.passcode())).status).toBe(200);
  });

  it("refuses a task larger than the inventory and changes nothing", async () => {
    const db = core.storage.db;
    const count = async (table: "enrollments" | "outbox" | "provisioning_tasks") =>
      Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
    const before = [await count("enrollments"), await count("outbox"), await count("provisioning_tasks")];
    const tokensBefore = await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&state=inventory`, t.apiKeys.auditor);
    const response = await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, { virtualServerId: t.virtualServerId, users: { group: "staff" }, tokenType: "mobile" });
    expect(response.status).toBe(409);
    expect(response.json.error.code).toBe("INVENTORY_SHORT");
    expect([await count("enrollments"), await count("outbox"), await count("provisioning_tasks")]).toEqual(before);
    const tokensAfter = await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&state=inventory`, t.apiKeys.auditor);
    expect(tokensAfter.json.items).toEqual(tokensBefore.json.items);
  });

  it("kills the old code when the email is resent, kills open codes when the task is removed, and expires them at the stop date", async () => {
    const task = await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, { virtualServerId: t.virtualServerId, users: { userIds: ["eve", "fay"] }, tokenType: "mobile" });
    const first = await linkFor("eve");
    const resent = await api.call("POST", `/api/v1/provisioning/tasks/${task.json.id}/users/eve/resend`, t.apiKeys.operator);
    expect(resent.status).toBe(200);
    const second = await linkFor("eve");
    expect(second.code).not.toBe(first.code);
    expect((await api.app.inject({ method: "GET", url: `/enroll/${first.code}` })).statusCode).toBe(404);
    expect((await api.app.inject({ method: "GET", url: `/enroll/${second.code}` })).statusCode).toBe(200);

    const fay = await linkFor("fay");
    const serialOfFay = (await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&userId=fay`, t.apiKeys.auditor)).json.items[0].serial;
    const cancelled = await api.call("DELETE", `/api/v1/provisioning/tasks/${task.json.id}`, t.apiKeys.operator);
    expect(cancelled.json).toMatchObject({ status: "cancelled", counts: { cancelled: 2 } });
    expect((await api.app.inject({ method: "GET", url: `/enroll/${fay.code}` })).statusCode).toBe(404);
    expect((await api.call("GET", `/api/v1/tokens/${serialOfFay}`, t.apiKeys.auditor)).json).toMatchObject({ state: "inventory", user: null });

    const later = await api.call("POST", "/api/v1/provisioning/tasks", t.apiKeys.operator, {
      virtualServerId: t.virtualServerId,
      users: { userIds: ["fay"] },
      tokenType: "mobile",
      stopAt: new Date(core.clock.nowMs() + 3600_000).toISOString(),
    });
    const expiring = await linkFor("fay");
    core.clock.advance(3600_000 + 1);
    expect((await api.app.inject({ method: "GET", url: `/enroll/${expiring.code}` })).statusCode).toBe(404);
    expect(await core.services.provisioning.expireDue()).toBe(1);
    const expired = await api.call("GET", `/api/v1/provisioning/tasks/${later.json.id}`, t.apiKeys.operator);
    expect(expired.json.counts).toMatchObject({ total: 1, expired: 1 });
    expect((await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&userId=fay`, t.apiKeys.auditor)).json.items).toEqual([]);
  });

  it("enrolls a hardware token with a code from the device, locking the page after five wrong codes", async () => {
    await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users/gus/provision`, t.apiKeys.operator, { tokenType: "hardware" });
    const { code } = await linkFor("gus");
    const page = await api.app.inject({ method: "GET", url: `/enroll/${code}` });
    expect(page.body).toContain("HW-FLOW-1");
    const form = (otp: string) => api.app.inject({ method: "POST", url: `/enroll/${code}/confirm`, headers: { "content-type": "application/x-www-form-urlencoded" }, payload: `otp=${otp}` });
    const at = new Date(core.clock.nowMs()).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const right = execFileSync("oathtool", ["--totp", "--now", at, Buffer.from("12345678901234567890").toString("hex")], { encoding: "utf8" }).trim();
    const wrong = right === "000000" ? "111111" : "000000";
    for (let i = 0; i < 5; i++) expect((await form(wrong)).statusCode).toBe(400);
    const locked = await form(right);
    expect(locked.statusCode).toBe(429);
    core.clock.advance(15 * 60 * 1000 + 1);
    const at2 = new Date(core.clock.nowMs()).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const later = execFileSync("oathtool", ["--totp", "--now", at2, Buffer.from("12345678901234567890").toString("hex")], { encoding: "utf8" }).trim();
    const done = await form(later);
    expect(done.statusCode, done.body).toBe(200);
    expect((await api.call("GET", "/api/v1/tokens/HW-FLOW-1", t.apiKeys.auditor)).json).toMatchObject({ state: "active", user: { userId: "gus" }, hasKey: true, device: null });
  });

  it("enrolls an email token with a first code sent by email", async () => {
    await api.call("POST", `/api/v1/virtual-servers/${t.virtualServerId}/users/hal/provision`, t.apiKeys.operator, { tokenType: "email" });
    const { code } = await linkFor("hal");
    const page = await api.app.inject({ method: "GET", url: `/enroll/${code}` });
    expect(page.body).toContain("Email me a code");
    const asked = await api.app.inject({ method: "POST", url: `/enroll/${code}/email`, headers: { "content-type": "application/x-www-form-urlencoded" }, payload: "" });
    expect(asked.statusCode).toBe(200);
    expect(asked.body).toContain("h***@example.test");
    const before = smtp.received.length;
    await worker.runOnce();
    const mail = smtp.received.slice(before).find((m) => m.envelopeTo.includes("hal@example.test"))!;
    const passcode = /code is (\d{6})/.exec(mail.parsed.text ?? "")![1]!;
    const done = await api.app.inject({ method: "POST", url: `/enroll/${code}/confirm`, headers: { "content-type": "application/x-www-form-urlencoded" }, payload: `otp=${passcode}` });
    expect(done.statusCode, done.body).toBe(200);
    const tokens = await api.call("GET", `/api/v1/tokens?virtualServerId=${t.virtualServerId}&userId=hal`, t.apiKeys.auditor);
    expect(tokens.json.items[0]).toMatchObject({ type: "email", state: "active", otp: { mode: "hotp" } });
  });

  describe("refusals", () => {
    it("answers unknown and malformed codes with the same page and the device API with ENROLLMENT_CODE_INVALID", async () => {
      for (const path of ["/enroll/AAAAAAAAAAAAAAAAAAAAAAAAAA", "/enroll/not-a-code", "/enroll/%3Cscript%3E"]) {
        const page = await api.app.inject({ method: "GET", url: path });
        expect(page.statusCode).toBe(404);
        expect(page.body).toContain("cannot be used");
      }
      const device = await simulatedDevice(api, () => core.clock.nowMs());
      expect((await device.enroll("AAAAAAAAAAAAAAAAAAAAAAAAAA", true)).json.error.code).toBe("ENROLLMENT_CODE_INVALID");
    });
  });
});

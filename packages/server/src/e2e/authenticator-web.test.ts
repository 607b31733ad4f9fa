import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Fastify from "fastify";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../config.js";
import { webAppRoutes } from "../http/web-app.js";
import { startServer, type RunningServer } from "../main.js";
import { startTestSmtpServer, type TestSmtpServer } from "../modules/mail/test-smtp-server.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { freePort } from "../testing/net.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";

// The tessera web app (packages/authenticator/web, built by `npm test` before vitest) in a
// real Chromium on a phone-sized screen, against the real server: the link comes from
// the real enrollment email, through the self-enrollment page, into the app.
const artifacts = fileURLToPath(new URL("../../../../test-artifacts/authenticator/", import.meta.url));

const IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36";
const UI_TIMEOUT_MS = 30_000;


describe("the tessera web app against a running server", () => {
  let database: TestDatabase;
  let smtp: TestSmtpServer;
  let server: RunningServer;
  let browser: Browser;
  let vsId: string;
  let restKey: string;
  const contexts: BrowserContext[] = [];

  /** Provisions a mobile token to the user and returns the link of the email they got. */
  const enrollmentLinkFor = async (userId: string): Promise<string> => {
    await server.services.provisioning.createTask(installerPrincipal, { virtualServerId: vsId, users: { userIds: [userId] }, tokenType: "mobile" });
    const mail = await vi.waitFor(
      () => {
        const found = smtp.received.find((item) => item.envelopeTo.includes(`${userId}@example.test`));
        if (!found) throw new Error(`no mail for ${userId} yet`);
        return found;
      },
      { timeout: 30_000, interval: 100 },
    );
    const link = /https?:\/\/\S+\/enroll\/[A-Za-z2-7]+/.exec(mail.parsed.text ?? "")?.[0];
    expect(link, mail.parsed.text).toBeDefined();
    return link!;
  };

  const phone = async (userAgent: string): Promise<{ context: BrowserContext; page: Page }> => {
    // A new context has its own empty storage: a phone that never saw the app.
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, userAgent, locale: "en-US", colorScheme: "light" });
    contexts.push(context);
    context.setDefaultTimeout(UI_TIMEOUT_MS);
    const page = await context.newPage();
    return { context, page };
  };

  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

  /** From the email's link: the self-enrollment page, then its button into the web app. */
  const openAppFromMail = async (page: Page, link: string) => {
    await page.goto(link);
    await page.getByRole("link", { name: "Enroll in the Tessera app" }).click();
    await page.waitForURL(/\/app\/#\/enroll\?code=/);
    await page.getByRole("heading", { name: "Allow notifications?" }).waitFor();
  };

  /** The user's enrollment, from the email into the app on a phone, with notifications allowed. */
  const enrolledAllowingNotifications = async (userId: string, userAgent: string): Promise<{ context: BrowserContext; page: Page }> => {
    const link = await enrollmentLinkFor(userId);
    const { context, page } = await phone(userAgent);
    await context.grantPermissions(["notifications"], { origin: server.url });
    await openAppFromMail(page, link);
    await page.getByRole("button", { name: "Allow notifications" }).click();
    await page.getByRole("heading", { name: "You're all set" }).waitFor();
    return { context, page };
  };

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    database = await createTestDatabase("sqlite");
    smtp = await startTestSmtpServer();
    const port = await freePort();
    server = await startServer(
      loadConfig({
        TESSERA_DATA_DIR: database.dataDir,
        TESSERA_HTTP_PORT: String(port),
        TESSERA_RADIUS_PORT: "off",
        TESSERA_MASTER_KEY: "ef".repeat(32),
        TESSERA_LOG_LEVEL: "silent",
        TESSERA_SMTP_URL: smtp.url,
      }),
    );
    const services = server.services;
    vsId = (await services.virtualServers.create(installerPrincipal, { name: "Web Org" })).id;
    for (const userId of ["web-ann", "web-bob", "web-cy", "web-dee"]) {
      await services.users.create(installerPrincipal, vsId, { userId, firstName: userId, lastName: "", email: `${userId}@example.test`, groups: [] });
    }
    await services.tokens.add(installerPrincipal, { virtualServerId: vsId, type: "mobile", count: 4 });
    await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "Staff VPN", kind: "radius", pushOtp: true, radiusAddresses: ["10.0.0.0/8"] });
    restKey = (await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "portal", kind: "rest" })).apiKey!;
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  afterAll(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await server?.close();
    await smtp?.close();
    await database?.drop();
  });

  it("enrolls from the email with notifications allowed, shows passcodes the server accepts, even offline, and reports Autosend Passcode", async () => {
    const link = await enrollmentLinkFor("web-ann");
    const { context, page } = await phone(IPHONE);
    await context.grantPermissions(["notifications"], { origin: server.url });
    await openAppFromMail(page, link);
    await shot(page, "1-enrollment-question");

    await page.getByRole("button", { name: "Allow notifications" }).click();
    await page.getByRole("heading", { name: "You're all set" }).waitFor();
    await expect.poll(() => page.locator(".push-apps").innerText()).toContain("Staff VPN");
    await shot(page, "2-enrollment-success");
    const serial = (await page.locator("[data-serial]").getAttribute("data-serial"))!;
    expect(await server.services.tokens.get(installerPrincipal, serial)).toMatchObject({
      state: "active",
      device: { app: "tessera", target: "iOS 17.4", deviceType: "phone", appVersion: "web 0.1.0", pushAtEnrollment: "enabled", pushNow: "enabled" },
    });

    // The enrollment spent this time step's passcode; step the token's record back one, as
    // if the next step had come, so the passcode the app shows now must be accepted.
    await server.services.storage.db
      .updateTable("tokens")
      .set((eb) => ({ last_totp_step: eb("last_totp_step", "-", 1) }))
      .where("serial", "=", serial)
      .execute();
    await page.getByRole("button", { name: "Show my passcode" }).click();
    const shown = page.locator(`[data-token="${serial}"] [data-passcode]`);
    await expect.poll(() => shown.getAttribute("data-passcode"), { timeout: UI_TIMEOUT_MS }).toMatch(/^\d{6}$/);
    await shot(page, "3-token-list");
    const passcode = await shown.getAttribute("data-passcode");
    const response = await fetch(`${server.url}/api/v1/auth`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${restKey}` },
      body: JSON.stringify({ userId: "web-ann", passcode }),
    });
    expect(await response.json()).toEqual({ result: "accept", serial });

    await page.locator(`[data-token="${serial}"]`).click();
    await page.getByRole("heading", { name: "Token details" }).waitFor();
    const field = (name: string) => page.locator(`[data-field="${name}"]`).innerText();
    expect({ serial: await field("serial"), mode: await field("mode"), digits: await field("digits"), period: await field("period"), virtualServer: await field("virtualServer"), user: await field("user") }).toEqual({
      serial,
      mode: "TOTP",
      digits: "6",
      period: "30 seconds",
      virtualServer: "Web Org",
      user: "web-ann",
    });
    await expect.poll(() => page.locator("[data-passcode]").getAttribute("data-passcode")).toMatch(/^\d{6}$/);
    await shot(page, "4-token-details");

    // The service worker cached the shell: with the network gone, the app still shows passcodes.
    await page.waitForFunction("navigator.serviceWorker.controller !== null");
    await context.setOffline(true);
    await page.reload();
    await page.getByRole("heading", { name: "Token details" }).waitFor();
    await expect.poll(() => page.locator("[data-passcode]").getAttribute("data-passcode")).toMatch(/^\d{6}$/);
    await context.setOffline(false);

    await page.getByRole("link", { name: "Back" }).click();
    await page.getByRole("link", { name: "Settings" }).click();
    const autosend = page.getByRole("switch", { name: "Autosend Passcode" });
    expect(await autosend.isChecked()).toBe(true);
    await autosend.click();
    await page.locator('[data-autosend-result="off"]').waitFor();
    expect(await page.locator('[data-autosend-result="off"]').innerText()).toContain("Push OTP disabled");
    expect((await server.services.tokens.get(installerPrincipal, serial)).device).toMatchObject({ pushAtEnrollment: "enabled", pushNow: "disabled" });
    await autosend.click();
    await page.locator('[data-autosend-result="on"]').waitFor();
    expect((await server.services.tokens.get(installerPrincipal, serial)).device).toMatchObject({ pushAtEnrollment: "enabled", pushNow: "enabled" });
    await shot(page, "5-settings");
  }, 180_000);

  it("gives the server a new Web Push subscription from the service worker when the browser changes it, signed with the device key", async () => {
    const { context, page } = await enrolledAllowingNotifications("web-dee", ANDROID);
    const serial = (await page.locator("[data-serial]").getAttribute("data-serial"))!;
    const device = () =>
      server.services.storage.db
        .selectFrom("devices")
        .select(["push_subscription", "push_now"])
        .where("token_serial", "=", serial)
        .executeTakeFirstOrThrow();
    // Headless Chromium reaches no push service, so the app enrolled without a subscription.
    expect(await device()).toEqual({ push_subscription: null, push_now: "enabled" });
    await page.evaluate(async () => {
      await (globalThis as unknown as { navigator: { serviceWorker: { ready: Promise<unknown> } } }).navigator.serviceWorker.ready;
    });
    // The app is closed; only the service worker is left to act.
    const other = await context.newPage();
    await other.goto(`${server.url}/healthz`);
    await page.close();
    const worker = context.serviceWorkers().find((candidate) => candidate.url() === `${server.url}/app/sw.js`) ?? (await context.waitForEvent("serviceworker"));
    // The push service has replaced the subscription: the browser's PushManager now gives
    // a new one (stood in for here, since there is no push service to ask) and the
    // browser tells the worker, which is what `pushsubscriptionchange` stands for.
    const p256dh = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 7)]).toString("base64url");
    const renewed = { endpoint: "https://fcm.googleapis.com/fcm/send/renewed-by-the-service-worker", expirationTime: null, keys: { p256dh, auth: Buffer.alloc(16, 9).toString("base64url") } };
    await worker.evaluate((subscription) => {
      const scope = globalThis as unknown as { registration: object; dispatchEvent(event: Event): boolean };
      Object.defineProperty(scope.registration, "pushManager", {
        value: { getSubscription: async () => null, subscribe: async () => ({ toJSON: () => subscription }) },
      });
      scope.dispatchEvent(new Event("pushsubscriptionchange"));
    }, renewed);
    await expect.poll(async () => (await device()).push_subscription, { timeout: UI_TIMEOUT_MS }).not.toBeNull();
    expect(JSON.parse((await device()).push_subscription!)).toEqual(renewed);
    expect((await device()).push_now).toBe("enabled");
    // The state the worker saved keeps the token the app enrolled.
    const reopened = await context.newPage();
    await reopened.goto(`${server.url}/app/`);
    await reopened.locator(`[data-token="${serial}"]`).waitFor();
  }, 180_000);

  it("shows a push login with the application, source and number to match; Approve lets it in, an ended one leaves, Deny and report rejects it and stops push for the user", async () => {
    const intranet = await server.services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "intranet", resourceName: "Company intranet", kind: "rest", pushOtp: true });
    const pushKey = intranet.apiKey!;
    const { page } = await enrolledAllowingNotifications("web-cy", IPHONE);
    await page.getByRole("button", { name: "Show my passcode" }).click();

    const login = async () => {
      const response = await fetch(`${server.url}/api/v1/auth`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${pushKey}` },
        body: JSON.stringify({ userId: "web-cy", passcode: "", sourceAddress: "203.0.113.9" }),
      });
      return (await response.json()) as { result: string; challengeId: string; numberToMatch: string };
    };
    const outcome = async (id: string) => (await (await fetch(`${server.url}/api/v1/auth/challenges/${id}?wait=15`, { headers: { authorization: `Bearer ${pushKey}` } })).json()) as { status: string; reason?: string };

    const first = await login();
    expect(first.result).toBe("pending");
    await page.locator(`[data-number-to-match="${first.numberToMatch}"]`).waitFor();
    await expect.poll(() => page.locator(".card").first().innerText()).toContain("Company intranet");
    expect(await page.locator(".card").first().innerText()).toContain("203.0.113.9");
    await shot(page, "8-push-approval");
    await page.getByRole("button", { name: "Approve" }).click();
    await page.locator('[data-push-outcome="approved"]').waitFor();
    expect(await outcome(first.challengeId)).toMatchObject({ status: "accept" });
    // It came over the live connection (the signed event stream), which marks the device.
    const device = await server.services.storage.db.selectFrom("devices").innerJoin("tokens", "tokens.serial", "devices.token_serial").innerJoin("users", "users.id", "tokens.user_pk").select("devices.live_capable").where("users.user_id", "=", "web-cy").executeTakeFirstOrThrow();
    expect(device.live_capable).toBe(1);

    // A login that ends without the phone (the application withdrew it: the user typed
    // the passcode instead) leaves the screen: the app hears of it over the live connection.
    const third = await login();
    await page.locator(`[data-number-to-match="${third.numberToMatch}"]`).waitFor();
    // As the service worker would have shown it while the app was in the background.
    const registration = `navigator.serviceWorker.getRegistration("/app/")`;
    await page.evaluate(`${registration}.then((r) => r.showNotification("Sign in to Company intranet?", { tag: ${JSON.stringify(third.challengeId)}, requireInteraction: true }))`);
    const tray = () => page.evaluate(`${registration}.then((r) => r.getNotifications()).then((shown) => shown.map((n) => n.tag))`) as Promise<string[]>;
    expect(await tray()).toEqual([third.challengeId]);
    const withdrawn = await fetch(`${server.url}/api/v1/auth/challenges/${third.challengeId}`, { method: "DELETE", headers: { authorization: `Bearer ${pushKey}` } });
    expect(withdrawn.status).toBe(204);
    await page.getByText("No longer waiting").waitFor();
    expect(await page.getByRole("button", { name: "Approve" }).count()).toBe(0);
    // Its notification leaves the tray too.
    await expect.poll(tray, { timeout: UI_TIMEOUT_MS }).toEqual([]);

    const reported = await login();
    await page.locator(`[data-number-to-match="${reported.numberToMatch}"]`).waitFor();
    await page.getByRole("button", { name: "Deny and report" }).click();
    await page.locator('[data-push-outcome="fraud"]').waitFor();
    expect(await outcome(reported.challengeId)).toMatchObject({ status: "reject" });
    // Reported: no push for this user for a while; the passcode is typed instead.
    expect(await login()).toMatchObject({ result: "reject", reason: "push_blocked" });
  }, 180_000);

  it("turns a Web Push message into a sign-in notification, from the service worker, when the app is closed, stays quiet while it is in front, and puts how the login ended in the request's place", async () => {
    const { context, page: app } = await phone(ANDROID);
    await context.grantPermissions(["notifications"], { origin: server.url });
    await app.goto(`${server.url}/app/`);
    await app.getByRole("heading", { name: "No token here yet" }).waitFor();
    // Until its service worker is active, nothing could show a notification.
    await app.evaluate(async () => {
      await (globalThis as unknown as { navigator: { serviceWorker: { ready: Promise<unknown> } } }).navigator.serviceWorker.ready;
    });
    const page = await context.newPage();
    await page.goto(`${server.url}/healthz`);
    const cdp = await context.newCDPSession(page);
    const registrationId = new Promise<string>((resolve) =>
      cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations }) => {
        const registration = registrations.find((candidate) => candidate.scopeURL === `${server.url}/app/` && !candidate.isDeleted);
        if (registration) resolve(registration.registrationId);
      }),
    );
    await cdp.send("ServiceWorker.enable");
    // What the server's Web Push message holds once the browser has decrypted it.
    const challenge = (id: string, lifeMs = 60_000) => ({ type: "challenge", id, resourceName: "Company intranet", source: "198.51.100.7", numberToMatch: "42", expiresAt: new Date(Date.now() + lifeMs).toISOString() });
    // The browser hands a message over without waiting for the worker. The worker's
    // work on each (the promises it gives waitUntil) is counted as it ends, so that the
    // test looks at the tray only once the worker is done with a message.
    const worker = context.serviceWorkers().find((candidate) => candidate.url() === `${server.url}/app/sw.js`) ?? (await context.waitForEvent("serviceworker"));
    await worker.evaluate(() => {
      const scope = globalThis as unknown as { ExtendableEvent: { prototype: { waitUntil(promise: Promise<unknown>): void } }; pushesHandled?: number };
      const waitUntil = scope.ExtendableEvent.prototype.waitUntil;
      scope.ExtendableEvent.prototype.waitUntil = function (this: unknown, promise: Promise<unknown>) {
        waitUntil.call(this, promise);
        void promise.finally(() => void (scope.pushesHandled = (scope.pushesHandled ?? 0) + 1)).catch(() => undefined);
      };
    });
    let delivered = 0;
    /**
     * Hands the worker messages as the browser would once decrypted, and waits until the
     * worker is done with them and a moment more: headless Chromium registers a shown
     * notification a little after showNotification resolves, and a look at the tray
     * before then loses it for good.
     */
    const deliver = async (...messages: object[]) => {
      for (const message of messages) await cdp.send("ServiceWorker.deliverPushMessage", { origin: server.url, registrationId: await registrationId, data: JSON.stringify(message) });
      delivered += messages.length;
      await expect.poll(() => worker.evaluate(() => (globalThis as unknown as { pushesHandled?: number }).pushesHandled ?? 0), { timeout: UI_TIMEOUT_MS }).toBe(delivered);
      await new Promise((resolve) => setTimeout(resolve, 300));
    };
    // With the app in front (it shows the request from its live connection), the worker
    // stays quiet: no notification of this one appears, now or below.
    await app.bringToFront();
    expect(await app.evaluate("document.hasFocus() && document.visibilityState")).toBe("visible");
    await deliver(challenge("chl_appinfront"));
    // The app is closed: only another page of the site is open, so no window of the app
    // (not even one kept for the back button) could be taken for the app in front.
    await page.bringToFront();
    await app.close();
    // Closing is done for the test before the worker's list of windows says so: until
    // then the worker could still take the closed app for the app in front.
    const appWindows = () =>
      worker.evaluate(async () => {
        const scope = globalThis as unknown as { clients: { matchAll(options: object): Promise<Array<{ url: string }>> } };
        return (await scope.clients.matchAll({ type: "window", includeUncontrolled: true })).filter((client) => new URL(client.url).pathname.startsWith("/app/")).length;
      });
    await expect.poll(appWindows, { timeout: UI_TIMEOUT_MS }).toBe(0);
    type Shown = { title: string; body: string; tag: string; silent: boolean; data: unknown };
    const notifications = () =>
      page.evaluate(async () => {
        // In the browser: the Notifications API (the test's own types have no DOM).
        const { serviceWorker } = (globalThis as unknown as { navigator: { serviceWorker: { getRegistration(scope: string): Promise<{ getNotifications(): Promise<Shown[]> }> } } }).navigator;
        const registration = await serviceWorker.getRegistration("/app/");
        return (await registration.getNotifications()).map(({ title, body, tag, silent, data }) => ({ title, body, tag, silent, data }));
      }).then((shown) => shown.sort((a, b) => a.tag.localeCompare(b.tag)));
    const signIn = (id: string) => ({ title: "Sign in to Company intranet?", body: "From 198.51.100.7. Number to match: 42. Tap to approve or deny.", tag: id, silent: false, data: { url: `/app/#/push/${id}` } });
    const endedNote = (id: string, how: string) => ({ title: "Sign-in request ended", body: `Company intranet: ${how}.`, tag: id, silent: true, data: { url: "/app/" } });
    await deliver(challenge("chl_webpushtest"));
    expect(await notifications()).toEqual([signIn("chl_webpushtest")]);

    // The login ended (approved on another device): the request leaves the tray, and a
    // quiet notification in its place says how it ended.
    const ended = (id: string, outcome: string) => ({ type: "ended", id, outcome, resourceName: "Company intranet" });
    await deliver(ended("chl_webpushtest", "approved"));
    expect(await notifications()).toEqual([endedNote("chl_webpushtest", "approved on another of your devices")]);
    // Another request waits on while one beside it is withdrawn.
    await deliver(challenge("chl_stillwaiting"));
    await deliver(challenge("chl_withdrawn"));
    expect((await notifications()).map((shown) => shown.tag)).toEqual(["chl_stillwaiting", "chl_webpushtest", "chl_withdrawn"]);
    await deliver(ended("chl_withdrawn", "cancelled"));
    expect(await notifications()).toEqual([
      signIn("chl_stillwaiting"),
      endedNote("chl_webpushtest", "approved on another of your devices"),
      endedNote("chl_withdrawn", "withdrawn: the passcode was typed instead, or the sign-in page was left"),
    ]);
    // A request that reaches the phone only after it expired (the phone was offline) says so instead of asking.
    await deliver(challenge("chl_late", -1_000));
    expect((await notifications()).find((shown) => shown.tag === "chl_late")).toEqual(endedNote("chl_late", "nobody answered in time"));
    // A request and its end handed over together keep their order.
    await deliver(challenge("chl_together"), ended("chl_together", "denied"));
    expect((await notifications()).find((shown) => shown.tag === "chl_together")).toEqual(endedNote("chl_together", "denied on another of your devices"));
    // Push services do not promise order: a request whose end overtook it says how it
    // ended instead of asking.
    await deliver(ended("chl_overtaken", "cancelled"), challenge("chl_overtaken"));
    expect((await notifications()).find((shown) => shown.tag === "chl_overtaken")).toEqual(endedNote("chl_overtaken", "withdrawn: the passcode was typed instead, or the sign-in page was left"));
    // The end is kept where it outlives the worker: the browser stops an idle one, and
    // the request may come to the next.
    await deliver(ended("chl_afterstop", "approved"));
    await cdp.send("ServiceWorker.stopAllWorkers");
    // The request wakes a new worker, which keeps nothing of the last one in memory.
    // Playwright does not see a worker started again, so the test waits for a sign the
    // page can read: an end the worker keeps, handed over after the request. Messages
    // are handled in turn, so once that end is kept the request has been shown.
    for (const message of [challenge("chl_afterstop"), ended("chl_marker", "expired")]) {
      await cdp.send("ServiceWorker.deliverPushMessage", { origin: server.url, registrationId: await registrationId, data: JSON.stringify(message) });
    }
    const kept = (id: string) =>
      page.evaluate(async (key) => {
        const { caches } = globalThis as unknown as { caches: { open(name: string): Promise<{ match(url: string): Promise<unknown> }> } };
        return (await (await caches.open("tessera-ended")).match(key)) !== undefined;
      }, `${server.url}/app/ended/${id}`);
    await expect.poll(() => kept("chl_marker"), { timeout: UI_TIMEOUT_MS }).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await notifications()).find((shown) => shown.tag === "chl_afterstop")).toEqual(endedNote("chl_afterstop", "approved on another of your devices"));
    // Every request that did not end still asks.
    expect((await notifications()).filter((shown) => !shown.silent).map((shown) => shown.tag)).toEqual(["chl_stillwaiting"]);
  }, 60_000);

  it("enrolls with No Thanks as Push OTP disabled, and removes the token after confirmation", async () => {
    const link = await enrollmentLinkFor("web-bob");
    const { page } = await phone(ANDROID);
    await openAppFromMail(page, link);
    await page.getByRole("button", { name: "No Thanks" }).click();
    await page.getByRole("heading", { name: "You're all set" }).waitFor();
    const serial = (await page.locator("[data-serial]").getAttribute("data-serial"))!;
    expect(await server.services.tokens.get(installerPrincipal, serial)).toMatchObject({
      state: "active",
      device: { target: "Android 14", deviceType: "phone", pushAtEnrollment: "disabled", pushNow: "disabled" },
    });

    await page.getByRole("button", { name: "Show my passcode" }).click();
    await page.locator(`[data-token="${serial}"]`).click();
    await page.getByRole("button", { name: "Remove from this device" }).click();
    await page.getByRole("dialog", { name: "Remove this token?" }).waitFor();
    await shot(page, "6-remove-confirmation");
    await page.getByRole("dialog").getByRole("button", { name: "Remove", exact: true }).click();
    await page.getByRole("heading", { name: "No token here yet" }).waitFor();
    expect(await page.locator("[data-token]").count()).toBe(0);
  }, 120_000);

  it("shows the server's refusal of an unknown enrollment code readably", async () => {
    const { page } = await phone(IPHONE);
    await page.goto(`${server.url}/app/#/enroll?code=${"A".repeat(26)}`);
    await page.getByRole("button", { name: "No Thanks" }).click();
    await page.getByRole("heading", { name: "Enrollment did not work" }).waitFor();
    expect(await page.getByRole("alert").innerText()).toContain("ENROLLMENT_CODE_INVALID");
    await shot(page, "7-enrollment-error");
  });

  it("serves the app at /app/ with its security and caching headers", async () => {
    const redirect = await fetch(`${server.url}/app`, { redirect: "manual" });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/app/");
    const index = await fetch(`${server.url}/app/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-security-policy")).toBe("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    expect(await index.text()).toContain('<link rel="manifest" href="/app/manifest.webmanifest"');
    const worker = await fetch(`${server.url}/app/sw.js`);
    expect(worker.headers.get("cache-control")).toBe("no-cache");
    expect(worker.headers.get("service-worker-allowed")).toBe("/app/");
    const manifest = (await (await fetch(`${server.url}/app/manifest.webmanifest`)).json()) as { name: string; start_url: string; display: string; icons: Array<{ src: string; sizes: string }> };
    expect(manifest).toMatchObject({ name: "Tessera", start_url: "/app/", display: "standalone" });
    for (const icon of manifest.icons) {
      const png = await fetch(`${server.url}${icon.src}`);
      expect(png.headers.get("content-type")).toBe("image/png");
    }
    expect(manifest.icons.map((icon) => icon.sizes)).toEqual(["192x192", "512x512"]);
  });
});

describe("the web app's routes without a build", () => {
  it("answer 503 with a clear message instead of failing", async () => {
    const app = Fastify();
    await app.register(webAppRoutes, { distDir: mkdtempSync(path.join(tmpdir(), "tessera-no-web-")) });
    try {
      for (const url of ["/app/", "/app/sw.js"]) {
        const response = await app.inject({ url });
        expect(response.statusCode).toBe(503);
        expect(response.body).toMatch(/web app is not built/);
      }
      expect((await app.inject({ url: "/app" })).headers.location).toBe("/app/");
    } finally {
      await app.close();
    }
  });
});

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createAuthenticator, emptyState, type AuthenticatorState } from "@tessera/authenticator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { startServer, type RunningServer } from "../main.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { freePort } from "../testing/net.js";
import { createTestDatabase, type TestDatabase } from "../testing/databases.js";
import { startTestPushService } from "../testing/push-service.js";


// The whole Web Push path as it runs in production, configured from the environment: a
// server trusting a push service's certificate authority, the authenticator core
// subscribing with the server's VAPID key as the web app does, a login while the app is
// not running, the push service receiving what only the device can decrypt, and the
// woken app approving.
describe("Web Push from a configured server to a device whose app is closed", () => {
  let push: Awaited<ReturnType<typeof startTestPushService>>;
  let database: TestDatabase;
  let server: RunningServer;
  let certDir: string;
  let vsId: string;
  let restKey: string;
  let state: AuthenticatorState = emptyState();
  const keysAskedWith: string[] = [];
  let subscriptionId = "";
  // The browser keeps its subscription until the push service renews it (renewNext).
  let current: ReturnType<typeof push.subscribe> | null = null;
  let renewNext = false;
  /** Runs while the app waits for the browser's subscription (another tab saving meanwhile). */
  let meanwhile: (() => void) | null = null;
  const app = createAuthenticator({
    store: { load: async () => structuredClone(state), save: async (next) => void (state = structuredClone(next)) },
    fetch: globalThis.fetch,
    platform: { os: "Android", osVersion: "15", deviceType: "phone", appVersion: "web 1.0" },
    webPush: {
      // What the browser's PushManager.subscribe() does: a subscription at its push service.
      async subscribe(vapidPublicKey) {
        keysAskedWith.push(vapidPublicKey);
        meanwhile?.();
        meanwhile = null;
        if (!current || renewNext) current = push.subscribe();
        renewNext = false;
        subscriptionId = current.id;
        return current.subscription;
      },
    },
  });

  beforeAll(async () => {
    push = await startTestPushService();
    certDir = mkdtempSync(path.join(tmpdir(), "tessera-push-ca-"));
    writeFileSync(path.join(certDir, "push-ca.pem"), push.ca);
    database = await createTestDatabase("sqlite");
    const config = loadConfig({
      TESSERA_DATA_DIR: database.dataDir,
      TESSERA_HTTP_PORT: String(await freePort()),
      TESSERA_RADIUS_PORT: "off",
      TESSERA_MASTER_KEY: "ab".repeat(32),
      TESSERA_LOG_LEVEL: "silent",
      TESSERA_WEB_PUSH_SUBJECT: "mailto:ops@example.test",
      TESSERA_WEB_PUSH_HOSTS: new URL(push.origin).host,
      TESSERA_WEB_PUSH_CA_FILE: path.join(certDir, "push-ca.pem"),
    });
    server = await startServer(config);
    const services = server.services;
    vsId = (await services.virtualServers.create(installerPrincipal, { name: "Push Org" })).id;
    await services.users.create(installerPrincipal, vsId, { userId: "nadia", firstName: "Nadia", lastName: "", email: "nadia@example.test", groups: [] });
    await services.tokens.add(installerPrincipal, { virtualServerId: vsId, type: "mobile", count: 1 });
    restKey = (await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "wiki", resourceName: "Team wiki", kind: "rest", pushOtp: true })).apiKey!;
  });
  afterAll(async () => {
    await server.close();
    await database.drop();
    await push.close();
    rmSync(certDir, { recursive: true, force: true });
  });

  it("wakes the app with an encrypted message through the push service; the app approves and the login is accepted", async () => {
    await server.services.provisioning.createTask(installerPrincipal, { virtualServerId: vsId, users: { userIds: ["nadia"] }, tokenType: "mobile" });
    const outbox = await server.services.mail.listOutbox(installerPrincipal, { virtualServerId: vsId, status: "queued", limit: 10 });
    const link = outbox.items.find((item) => item.to === "nadia@example.test")!.enrollUrl!;

    const token = await app.enroll(link, { pushPermitted: true });
    const vapid = (await (await fetch(`${server.url}/device/v1/web-push`)).json()) as { publicKey: string };
    expect(keysAskedWith).toEqual([vapid.publicKey]);
    expect(await server.services.tokens.get(installerPrincipal, token.serial)).toMatchObject({ device: { pushNow: "enabled" } });
    // Enrollment spent this step's passcode: step the record back, as if the next step had come.
    await server.services.storage.db.updateTable("tokens").set((eb) => ({ last_totp_step: eb("last_totp_step", "-", 1) })).where("serial", "=", token.serial).execute();

    const login = await fetch(`${server.url}/api/v1/auth`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${restKey}` },
      body: JSON.stringify({ userId: "nadia", passcode: "", sourceAddress: "192.0.2.80" }),
    });
    const pending = (await login.json()) as { result: string; challengeId: string; numberToMatch: string };
    expect(pending.result).toBe("pending");

    await push.waitFor(1);
    expect(push.rejected).toEqual([]);
    expect(push.received).toHaveLength(1);
    const message = push.received[0]!;
    expect(message.subscriptionId).toBe(subscriptionId);
    expect(message.vapid).toMatchObject({ publicKey: vapid.publicKey, claims: { aud: push.origin, sub: "mailto:ops@example.test" } });
    expect(message.payload).toMatchObject({ type: "challenge", id: pending.challengeId, resourceName: "Team wiki", source: "192.0.2.80", numberToMatch: pending.numberToMatch });

    // Woken by the notification, the app fetches the request and approves it.
    const waiting = await app.pendingChallenges(0);
    const challenge = waiting.find((item) => item.id === pending.challengeId)!;
    expect(challenge).toMatchObject({ resourceName: "Team wiki", numberToMatch: pending.numberToMatch });
    expect(await app.answerChallenge(challenge, "approve")).toEqual({ status: "approved" });
    const outcome = await fetch(`${server.url}/api/v1/auth/challenges/${pending.challengeId}?wait=5`, { headers: { authorization: `Bearer ${restKey}` } });
    expect(await outcome.json()).toEqual({ status: "accept", serial: token.serial });
  });

  const deviceRow = async () => await server.services.storage.db.selectFrom("devices").select(["push_now", "push_subscription"]).executeTakeFirstOrThrow();

  it("drops the subscription when the user turns Autosend Passcode off, and gives it again when it is turned on", async () => {
    expect((await deviceRow()).push_subscription).toContain(subscriptionId);
    await app.setAutosend(false);
    expect(await deviceRow()).toEqual({ push_now: "disabled", push_subscription: null });
    await app.setAutosend(true);
    expect(await deviceRow()).toMatchObject({ push_now: "enabled", push_subscription: expect.stringContaining(subscriptionId) });
  });

  it("gives the server a subscription the push service renewed when the app starts, and nothing when none changed", async () => {
    expect(await app.renewWebPush()).toEqual([]);
    const before = subscriptionId;
    renewNext = true;
    expect(await app.renewWebPush()).toEqual([{ server: server.url }]);
    expect(subscriptionId).not.toBe(before);
    expect((await deviceRow()).push_subscription).toContain(subscriptionId);
    expect(await app.renewWebPush()).toEqual([]);
  });

  it("keeps what the app saved while its service worker renewed the subscription", async () => {
    renewNext = true;
    const enrolledMeanwhile = { ...state.tokens[0]!, serial: "MP-ENROLLED-MEANWHILE" };
    meanwhile = () => void (state = { ...state, tokens: [...state.tokens, enrolledMeanwhile] });
    expect(await app.renewWebPush()).toEqual([{ server: server.url }]);
    expect(state.tokens.map((token) => token.serial)).toContain("MP-ENROLLED-MEANWHILE");
    expect((await deviceRow()).push_subscription).toContain(subscriptionId);
    expect(state.device.webPushEndpoints?.[server.url]).toBe(JSON.parse((await deviceRow()).push_subscription!).endpoint);
  });

  it("changes nothing at the server when a renewal arrives after the user turned Autosend Passcode off", async () => {
    await app.setAutosend(false);
    expect(await deviceRow()).toEqual({ push_now: "disabled", push_subscription: null });
    // The renewal read the state before the user turned it off, and its request comes last.
    state = { ...state, device: { ...state.device, autosendPasscode: true } };
    renewNext = true;
    expect(await app.renewWebPush()).toEqual([]);
    expect(await deviceRow()).toEqual({ push_now: "disabled", push_subscription: null });
    state = { ...state, device: { ...state.device, autosendPasscode: false } };
    // Turned on again, the app gives the subscription with it.
    await app.setAutosend(true);
    expect(await deviceRow()).toMatchObject({ push_now: "enabled", push_subscription: expect.stringContaining(subscriptionId) });
  });

  it("sends nothing when the user turned Autosend Passcode off while the subscription was renewed", async () => {
    renewNext = true;
    const sent = (await deviceRow()).push_subscription;
    meanwhile = () => void (state = { ...state, device: { ...state.device, autosendPasscode: false } });
    expect(await app.renewWebPush()).toEqual([]);
    expect((await deviceRow()).push_subscription).toBe(sent);
    expect(state.device.autosendPasscode).toBe(false);
  });
});

import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { Agent } from "node:https";
import { connect, type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createKeyring } from "../../crypto/keyring.js";
import { reencryptSealedColumns } from "../../crypto/rotate.js";
import { createTestApp } from "../../http/testing-app.js";
import { createTestCore, describeEachDatabase, testMasterKey, type TestCore } from "../../testing/databases.js";
import { enrollSimulatedUser, simulatedDevice } from "../../testing/device.js";
import { createTenant, expiredChallengeRow, type TestTenant } from "../../testing/fixtures.js";
import { startTestPushService } from "../../testing/push-service.js";
import { installerPrincipal } from "../operators/access.js";
import { hashEnrollmentCode, newEnrollmentCode } from "../provisioning/codes.js";
import { createWebPush, pushServiceAllowed } from "./web-push.js";

describeEachDatabase("Web Push to a device whose app is not running", (kind) => {
  let push: Awaited<ReturnType<typeof startTestPushService>>;
  let core: TestCore;
  let api: Awaited<ReturnType<typeof createTestApp>>;
  let t: TestTenant;
  let appKey: string;
  const failures: string[] = [];
  // The statements the core runs while `recording`.
  const statements: string[] = [];
  let recording = false;

  const enrolledUser = (userId: string, pushSubscription?: object) => enrollSimulatedUser(core, api, t.virtualServerId, userId, { pushPermitted: true, pushSubscription });

  const login = (userId: string) => api.call("POST", "/api/v1/auth", appKey, { userId, passcode: "", sourceAddress: "203.0.113.9" });
  /** A second device of the user: another token, enrolled by a tablet. */
  const enrollSecondDevice = async (userId: string, pushSubscription: object) => {
    await core.services.provisioning.createTask(installerPrincipal, { virtualServerId: t.virtualServerId, users: { userIds: [userId] }, tokenType: "mobile", apps: ["tessera"] });
    const code = newEnrollmentCode();
    const user = await core.storage.db.selectFrom("users").select("id").where("virtual_server_id", "=", t.virtualServerId).where("user_id", "=", userId).executeTakeFirstOrThrow();
    await core.storage.db.updateTable("enrollments").set({ code_hash: hashEnrollmentCode(code) }).where("user_pk", "=", user.id).where("enrolled_at", "is", null).execute();
    const second = await simulatedDevice(api, () => core.clock.nowMs());
    const enrolled = await second.enroll(code, true, pushSubscription);
    expect(enrolled.status).toBe(201);
    expect((await second.confirm(enrolled.json.enrollmentId, second.passcode())).status).toBe(200);
    core.clock.advance(30_000);
    return second;
  };
  const subscriptionOf = async (deviceId: string) =>
    (await core.storage.db.selectFrom("devices").select("push_subscription").where("device_id", "=", deviceId).executeTakeFirstOrThrow()).push_subscription;

  beforeAll(async () => {
    push = await startTestPushService();
    core = await createTestCore(kind, {
      webPush: { subject: "mailto:security@example.test", allowedHosts: [new URL(push.origin).host], agent: new Agent({ ca: push.ca }) },
      onWebPushFailure: (deviceId, detail) => failures.push(`${deviceId}: ${detail}`),
      log: (event) => void (recording && statements.push(event.query.sql)),
    });
    api = await createTestApp(core);
    t = await createTenant(core.services, "WebPush");
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 16 });
    appKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "vpn", resourceName: "Corporate VPN", kind: "rest", pushOtp: true })).apiKey!;
  });
  afterAll(async () => {
    await api.close();
    await core.close();
    await push.close();
  });

  it("gives devices one VAPID public key, made once and kept sealed, the same from every node", async () => {
    const first = await api.call("GET", "/device/v1/web-push", null);
    expect(first.status).toBe(200);
    const publicKey = first.json.publicKey as string;
    expect(Buffer.from(publicKey, "base64url")).toHaveLength(65);
    // Another node over the same database gets the same pair, so a subscription works through any node...
    const node = createWebPush({ db: core.storage.db, keyring: core.services.keyring, clock: core.clock }, { subject: "mailto:x@example.test", allowedHosts: [] });
    expect(await node.publicKey()).toBe(publicKey);
    // ...and without the master key the private half stays closed.
    const stranger = createWebPush({ db: core.storage.db, keyring: createKeyring([Buffer.alloc(32, 0x33)]), clock: core.clock }, { subject: "mailto:x@example.test", allowedHosts: [] });
    await expect(stranger.publicKey()).rejects.toThrow();
    const row = await core.storage.db.selectFrom("server_secrets").selectAll().where("name", "=", "vapid").executeTakeFirstOrThrow();
    expect(row.public_value).toBe(publicKey);
    expect(row.secret_ciphertext).not.toContain(publicKey);
    expect((await api.call("GET", "/device/v1/web-push", null)).json.publicKey).toBe(publicKey);
  });

  it("sends a push login to the device's push service: VAPID-signed, encrypted for the device, decrypting to the challenge", async () => {
    const { id, subscription } = push.subscribe();
    const { device, serial } = await enrolledUser("wanda", subscription);
    const before = push.handled;
    const pending = await login("wanda");
    expect(pending.json).toMatchObject({ result: "pending" });
    await push.waitFor(before + 1);
    expect(push.rejected).toEqual([]);
    const message = push.received.at(-1)!;
    expect(message.subscriptionId).toBe(id);
    expect(message.vapid.publicKey).toBe((await api.call("GET", "/device/v1/web-push", null)).json.publicKey);
    expect(message.vapid.claims).toMatchObject({ aud: push.origin, sub: "mailto:security@example.test" });
    expect(message.headers.urgency).toBe("high");
    // The message lives no longer than the challenge (60 s).
    expect(Number(message.headers.ttl)).toBeGreaterThan(0);
    expect(Number(message.headers.ttl)).toBeLessThanOrEqual(60);
    expect(message.payload).toEqual({
      type: "challenge",
      id: pending.json.challengeId,
      resourceName: "Corporate VPN",
      source: "203.0.113.9",
      numberToMatch: pending.json.numberToMatch,
      expiresAt: pending.json.expiresAt,
    });
    // Woken, the app answers through the signed API as always.
    expect((await device.answer(pending.json.challengeId, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    expect(failures).toEqual([]);
  });

  it("tells the push services when a login ends, so that its notification leaves the tray: withdrawn, expired, answered on another device", async () => {
    const phone = push.subscribe();
    const tablet = push.subscribe();
    const { device, serial } = await enrolledUser("enda", phone.subscription);
    await enrollSecondDevice("enda", tablet.subscription);

    const messagesOf = (challengeId: string) =>
      push.received.filter((message) => message.payload.id === challengeId).map((message) => ({ to: message.subscriptionId === phone.id ? "phone" : message.subscriptionId === tablet.id ? "tablet" : "?", payload: message.payload }));
    const endOf = (challengeId: string, outcome: string) => ({ type: "ended", id: challengeId, outcome, resourceName: "Corporate VPN" });

    // Withdrawn by the application: both devices hear of it.
    let before = push.handled;
    const withdrawn = (await login("enda")).json.challengeId as string;
    await push.waitFor(before + 2);
    expect((await api.call("DELETE", `/api/v1/auth/challenges/${withdrawn}`, appKey)).status).toBe(204);
    await push.waitFor(before + 4);
    expect(messagesOf(withdrawn).filter((m) => m.payload.type === "ended")).toEqual(
      expect.arrayContaining([
        { to: "phone", payload: endOf(withdrawn, "cancelled") },
        { to: "tablet", payload: endOf(withdrawn, "cancelled") },
      ]),
    );
    const ended = push.received.filter((message) => message.payload.type === "ended").at(-1)!;
    expect(ended.headers.urgency).toBe("high");
    // It may wait at the push service as long as the challenge's own message could, and a minute more.
    expect(Number(ended.headers.ttl)).toBeGreaterThan(60);
    expect(Number(ended.headers.ttl)).toBeLessThanOrEqual(120);

    // Approved on the phone: the tablet hears of it, the phone (which answered) does not.
    before = push.handled;
    const approved = (await login("enda")).json.challengeId as string;
    await push.waitFor(before + 2);
    expect((await device.answer(approved, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    await push.waitFor(before + 3);
    // Nobody answered the third: once the sweep closes it, both hear that it expired.
    const expired = (await login("enda")).json.challengeId as string;
    await push.waitFor(before + 5);
    // Its node has marked the request taken (on PostgreSQL the sweep skips a row another
    // statement holds, and would leave it to its next look).
    await expect.poll(async () => (await core.storage.db.selectFrom("challenges").select("wake_push_owed").where("id", "=", expired).executeTakeFirstOrThrow()).wake_push_owed).toBe(0);
    core.clock.advance(61_000);
    expect(await core.services.push.closeExpired()).toBe(1);
    await push.waitFor(before + 7);
    expect(messagesOf(approved).filter((m) => m.payload.type === "ended")).toEqual([{ to: "tablet", payload: endOf(approved, "approved") }]);
    expect(messagesOf(expired).filter((m) => m.payload.type === "ended")).toEqual(
      expect.arrayContaining([
        { to: "phone", payload: endOf(expired, "expired") },
        { to: "tablet", payload: endOf(expired, "expired") },
      ]),
    );
    expect(push.handled).toBe(before + 7);
    // Each was told, so none is owed: half a minute on, a look sends nothing again.
    const owed = () => core.storage.db.selectFrom("challenges").select("id").where("id", "in", [withdrawn, approved, expired]).where("end_push_owed", "=", 1).execute();
    await expect.poll(owed).toEqual([]);
    core.clock.advance(31_000);
    expect(await core.services.push.sendOwedEnds()).toBe(0);
    expect(push.handled).toBe(before + 7);
    expect(push.rejected).toEqual([]);
    expect(failures).toEqual([]);
  });

  it("sends the end a node did not send (it stopped after the commit), half a minute later, once", async () => {
    const { id, subscription } = push.subscribe();
    await enrolledUser("owen", subscription);
    let before = push.handled;
    const challengeId = (await login("owen")).json.challengeId as string;
    await push.waitFor(before + 1);
    const owed = async () => (await core.storage.db.selectFrom("challenges").select("end_push_owed").where("id", "=", challengeId).executeTakeFirstOrThrow()).end_push_owed;
    expect(await owed()).toBe(1);
    // A node withdrew it and stopped before sending anything: the database holds the
    // end, committed, and the mark.
    await core.storage.db.updateTable("challenges").set({ status: "cancelled", answered_at: core.clock.nowMs() }).where("id", "=", challengeId).execute();
    expect(await owed()).toBe(1);
    // The node that ended it has half a minute to send it.
    expect(await core.services.push.sendOwedEnds()).toBe(0);
    core.clock.advance(31_000);
    before = push.handled;
    expect(await core.services.push.sendOwedEnds()).toBe(1);
    await push.waitFor(before + 1);
    expect(push.received.at(-1)).toMatchObject({ subscriptionId: id, payload: { type: "ended", id: challengeId, outcome: "cancelled", resourceName: "Corporate VPN" } });
    expect(await owed()).toBe(0);
    expect(await core.services.push.sendOwedEnds()).toBe(0);
    expect(push.handled).toBe(before + 1);
    expect(failures).toEqual([]);
  });

  it("sends a push login's request again after its push service failed, five seconds on, while the login is open, once taken", async () => {
    const { id, subscription } = push.subscribe();
    await enrolledUser("wes", subscription);
    const owed = async (challengeId: string) => (await core.storage.db.selectFrom("challenges").select("wake_push_owed").where("id", "=", challengeId).executeTakeFirstOrThrow()).wake_push_owed;
    // Taken at once: owed no more.
    let before = push.handled;
    const taken = (await login("wes")).json.challengeId as string;
    await push.waitFor(before + 1);
    await expect.poll(() => owed(taken)).toBe(0);
    expect((await api.call("DELETE", `/api/v1/auth/challenges/${taken}`, appKey)).status).toBe(204);
    await push.waitFor(before + 2);

    // Refused by the push service (or its node stopped): owed, and sent by the next look five seconds on.
    push.answerWith(id, 503);
    before = push.handled;
    const refused = (await login("wes")).json.challengeId as string;
    await push.waitFor(before + 1);
    await expect.poll(() => failures.length).toBe(1);
    expect(await owed(refused)).toBe(1);
    push.answerWith(id, 201);
    expect(await core.services.push.sendOwedWakes()).toBe(0);
    core.clock.advance(5_000);
    before = push.handled;
    expect(await core.services.push.sendOwedWakes()).toBe(1);
    await push.waitFor(before + 1);
    expect(push.received.at(-1)).toMatchObject({ subscriptionId: id, payload: { type: "challenge", id: refused, resourceName: "Corporate VPN", source: "203.0.113.9" } });
    expect(await owed(refused)).toBe(0);
    expect(await core.services.push.sendOwedWakes()).toBe(0);

    // Once the login has ended, it is not sent again.
    push.answerWith(id, 503);
    before = push.handled;
    const ended = (await login("wes")).json.challengeId as string;
    await push.waitFor(before + 1);
    push.answerWith(id, 201);
    expect((await api.call("DELETE", `/api/v1/auth/challenges/${ended}`, appKey)).status).toBe(204);
    await push.waitFor(before + 2);
    core.clock.advance(5_000);
    expect(await core.services.push.sendOwedWakes()).toBe(0);
    expect(await owed(ended)).toBe(1);
    // Its refusal reported too, before the next test's count starts.
    await expect.poll(() => failures.length).toBe(2);
    failures.length = 0;
  });

  it("sends a push login's request again only to the device whose push service failed, not to the one that has it", async () => {
    failures.length = 0;
    const phone = push.subscribe();
    const tablet = push.subscribe();
    await enrolledUser("wyn", phone.subscription);
    const second = await enrollSecondDevice("wyn", tablet.subscription);
    const owed = async (challengeId: string) => core.storage.db.selectFrom("challenges").select(["wake_push_owed", "wake_owed_devices"]).where("id", "=", challengeId).executeTakeFirstOrThrow();
    push.answerWith(tablet.id, 503);
    let before = push.handled;
    const challengeId = (await login("wyn")).json.challengeId as string;
    await push.waitFor(before + 2);
    await expect.poll(() => owed(challengeId)).toEqual({ wake_push_owed: 1, wake_owed_devices: JSON.stringify([second.deviceId]) });
    expect(failures).toEqual([expect.stringMatching(new RegExp(`^${second.deviceId}: `))]);
    // The tablet's push service still fails: asked again (one request, refused), the phone is not.
    const wakesTo = (subscriptionId: string) => push.received.filter((message) => message.subscriptionId === subscriptionId && message.payload.id === challengeId).length;
    expect([wakesTo(phone.id), wakesTo(tablet.id)]).toEqual([1, 0]);
    core.clock.advance(5_000);
    before = push.handled;
    expect(await core.services.push.sendOwedWakes()).toBe(1);
    expect(push.handled).toBe(before + 1);
    expect([wakesTo(phone.id), wakesTo(tablet.id)]).toEqual([1, 0]);
    expect(failures).toHaveLength(2);
    expect(await owed(challengeId)).toEqual({ wake_push_owed: 1, wake_owed_devices: JSON.stringify([second.deviceId]) });
    // Taken at last: owed no more.
    push.answerWith(tablet.id, 201);
    before = push.handled;
    expect(await core.services.push.sendOwedWakes()).toBe(1);
    expect(push.handled).toBe(before + 1);
    expect([wakesTo(phone.id), wakesTo(tablet.id)]).toEqual([1, 1]);
    expect(await owed(challengeId)).toEqual({ wake_push_owed: 0, wake_owed_devices: null });
    expect(await core.services.push.sendOwedWakes()).toBe(0);
    failures.length = 0;
  });

  it("owes and writes nothing more for a push login whose devices have no subscription", async () => {
    const { device, serial } = await enrolledUser("nils");
    const before = push.handled;
    statements.length = 0;
    recording = true;
    const pending = await login("nils");
    expect(pending.json).toMatchObject({ result: "pending" });
    expect((await device.answer(pending.json.challengeId, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    recording = false;
    // The login's own statements ran (the challenge opened, then answered)...
    expect(statements.filter((statement) => /^insert into "challenges"/.test(statement))).toHaveLength(1);
    // ...and no message was owed, so none was sent and no mark was cleared afterwards.
    expect(statements.filter((statement) => /_push_owed" = (\?|\$\d+)/.test(statement))).toEqual([]);
    expect(push.handled).toBe(before);
    expect(await core.storage.db.selectFrom("challenges").select(["wake_push_owed", "end_push_owed"]).where("id", "=", pending.json.challengeId).executeTakeFirstOrThrow()).toEqual({ wake_push_owed: 0, end_push_owed: 0 });
    expect(failures).toEqual([]);
  });

  it("sends an end again after its push service failed, for ten minutes after the login ended", async () => {
    const { id, subscription } = push.subscribe();
    await enrolledUser("fay", subscription);
    const withdrawnWhileDown = async () => {
      const before = push.handled;
      const challengeId = (await login("fay")).json.challengeId as string;
      await push.waitFor(before + 1);
      push.answerWith(id, 503);
      expect((await api.call("DELETE", `/api/v1/auth/challenges/${challengeId}`, appKey)).status).toBe(204);
      await push.waitFor(before + 2);
      return challengeId;
    };
    const first = await withdrawnWhileDown();
    await expect.poll(() => failures.length).toBe(1);
    expect(failures[0]).toContain("503");
    push.answerWith(id, 201);
    core.clock.advance(31_000);
    let before = push.handled;
    expect(await core.services.push.sendOwedEnds()).toBe(1);
    await push.waitFor(before + 1);
    expect(push.received.at(-1)).toMatchObject({ subscriptionId: id, payload: { type: "ended", id: first, outcome: "cancelled" } });
    // Ten minutes after the end, it is no longer tried.
    await withdrawnWhileDown();
    push.answerWith(id, 201);
    core.clock.advance(10 * 60_000 + 1);
    before = push.handled;
    expect(await core.services.push.sendOwedEnds()).toBe(0);
    expect(push.handled).toBe(before);
    failures.length = 0;
  });

  it("sends every owed end in one look, a page at a time, though the first pages keep failing", async () => {
    const down = push.subscribe();
    const up = push.subscribe();
    await enrolledUser("dora", down.subscription);
    await enrolledUser("uli", up.subscription);
    const deviceOf = async (subscriptionId: string) =>
      (await core.storage.db.selectFrom("devices").select("device_id").where("push_subscription", "like", `%${subscriptionId}%`).executeTakeFirstOrThrow()).device_id!;
    const [downDevice, upDevice] = [await deviceOf(down.id), await deviceOf(up.id)];
    const users = await core.storage.db.selectFrom("users").select(["id", "user_id"]).where("user_id", "in", ["dora", "uli"]).execute();
    const application = await core.storage.db.selectFrom("applications").select("id").where("name", "=", "vpn").executeTakeFirstOrThrow();
    // 150 logins that ended a minute ago and still owe their end: the first 120 to a
    // push service that fails, the last 30 to one that works.
    const endedAt = core.clock.nowMs() - 60_000;
    const rows = Array.from({ length: 150 }, (_, i) => {
      const user = users.find((u) => u.user_id === (i < 120 ? "dora" : "uli"))!;
      return {
        ...expiredChallengeRow({ id: `chl-owed-${String(i).padStart(3, "0")}`, virtualServerId: t.virtualServerId, applicationId: application.id, userPk: user.id, nowMs: endedAt }),
        device_ids: JSON.stringify([i < 120 ? downDevice : upDevice]),
        status: "expired",
        answered_at: endedAt + i,
        end_push_owed: 1,
      };
    });
    await core.storage.db.insertInto("challenges").values(rows).execute();
    push.answerWith(down.id, 503);
    const before = push.handled;
    expect(await core.services.push.sendOwedEnds()).toBe(150);
    await push.waitFor(before + 150);
    expect(push.received.filter((message) => message.subscriptionId === up.id && message.payload.type === "ended")).toHaveLength(30);
    const stillOwed = await core.storage.db.selectFrom("challenges").select("id").where("id", "like", "chl-owed-%").where("end_push_owed", "=", 1).execute();
    expect(stillOwed).toHaveLength(120);
    // Once it works again, the next look sends the rest.
    push.answerWith(down.id, 201);
    expect(await core.services.push.sendOwedEnds()).toBe(120);
    expect(await core.storage.db.selectFrom("challenges").select("id").where("id", "like", "chl-owed-%").where("end_push_owed", "=", 1).execute()).toEqual([]);
    failures.length = 0;
  });

  it("forgets a subscription the push service no longer knows (410 Gone), and the live connection and poll still deliver", async () => {
    const { id, subscription } = push.subscribe();
    const { device } = await enrolledUser("gene", subscription);
    push.answerWith(id, 410);
    const before = push.handled;
    const pending = await login("gene");
    await push.waitFor(before + 1);
    await expect.poll(() => subscriptionOf(device.deviceId)).toBeNull();
    expect(failures.at(-1)).toMatch(/410/);
    expect((await device.poll()).json.items).toEqual([expect.objectContaining({ id: pending.json.challengeId })]);
    // The next login does not try the dead subscription again.
    const handled = push.handled;
    await login("gene");
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(push.handled).toBe(handled);
  });

  it("takes a new subscription, or none, in the device's signed settings; never posts to a push service outside the allowed hosts", async () => {
    const { device } = await enrolledUser("sol");
    expect(await subscriptionOf(device.deviceId)).toBeNull();
    const { id, subscription } = push.subscribe();
    expect((await device.settings(true, subscription)).status).toBe(200);
    expect(JSON.parse((await subscriptionOf(device.deviceId))!)).toEqual(subscription);
    let before = push.handled;
    await login("sol");
    await push.waitFor(before + 1);
    expect(push.received.at(-1)!.subscriptionId).toBe(id);

    // A push service elsewhere (another host, the same host on another port) is refused
    // and nothing is stored...
    for (const endpoint of ["https://169.254.169.254/latest/meta-data", "https://127.0.0.1:1/push/x"]) {
      const refused = await device.settings(true, { endpoint, keys: subscription.keys });
      expect(refused.status).toBe(400);
      expect(refused.json.error.code).toBe("PUSH_SERVICE_NOT_ALLOWED");
      expect(JSON.parse((await subscriptionOf(device.deviceId))!)).toEqual(subscription);
    }
    // ...and one stored before the list changed is never contacted.
    await core.storage.db.updateTable("devices").set({ push_subscription: JSON.stringify({ endpoint: "https://169.254.169.254/x", keys: subscription.keys }) }).where("device_id", "=", device.deviceId).execute();
    before = push.handled;
    await login("sol");
    await expect.poll(() => failures.at(-1)).toMatch(/not in TESSERA_WEB_PUSH_HOSTS/);
    expect(push.handled).toBe(before);

    expect((await device.settings(true, null)).status).toBe(200);
    expect(await subscriptionOf(device.deviceId)).toBeNull();
    // A subscription must be https and well formed.
    const bad = await device.settings(true, { endpoint: "http://127.0.0.1/push/x", keys: subscription.keys });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe("VALIDATION_FAILED");
  });

  it("re-encrypts the VAPID private key on master key rotation, and sends with it afterwards", async () => {
    const { id, subscription } = push.subscribe();
    await enrolledUser("rota", subscription);
    const rotated = createKeyring([Buffer.alloc(32, 9), testMasterKey]);
    const result = await reencryptSealedColumns({ ...core.services, keyring: rotated });
    expect(result.byKind.serverSecrets).toBe(1);
    const row = await core.storage.db.selectFrom("server_secrets").selectAll().where("name", "=", "vapid").executeTakeFirstOrThrow();
    expect(row.secret_key_id).toBe(rotated.currentKeyId);
    // A node that starts with the new key sends with the same key pair.
    const node = createWebPush({ db: core.storage.db, keyring: rotated, clock: core.clock }, { subject: "mailto:x@example.test", allowedHosts: [new URL(push.origin).host], agent: () => new Agent({ ca: push.ca }) });
    expect(await node.publicKey()).toBe(row.public_value);
    const sent = await node.send([{ deviceId: "d", subscription: JSON.stringify(subscription) }], { type: "ping" }, 10);
    expect(sent).toEqual([{ deviceId: "d", outcome: "sent" }]);
    expect(push.received.at(-1)).toMatchObject({ subscriptionId: id, payload: { type: "ping" } });
  });
});

it("reaches push services through an HTTP proxy when one is set: the proxy is asked to CONNECT to the push service", async () => {
  const push = await startTestPushService();
  const connects: string[] = [];
  // A forward proxy as corporate networks run them: CONNECT host:port, then a tunnel.
  const proxy = createHttpServer();
  proxy.on("connect", (request: IncomingMessage, client: Duplex, head: Buffer) => {
    connects.push(request.url ?? "");
    const [host, port] = (request.url ?? "").split(":");
    const upstream = connect(Number(port), host, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const core = await createTestCore("sqlite");
  try {
    const { subscription } = push.subscribe();
    const node = createWebPush(
      { db: core.storage.db, keyring: core.services.keyring, clock: core.clock },
      { subject: "mailto:x@example.test", allowedHosts: [new URL(push.origin).host], proxy: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` },
    );
    const [result] = await node.send([{ deviceId: "d", subscription: JSON.stringify(subscription) }], { type: "ping" }, 10);
    expect(connects).toEqual([new URL(push.origin).host]);
    // The test push service's certificate is its own; through a proxy only the system's
    // authorities are trusted, so the tunnel ends at TLS: what matters is the way it took.
    expect(result).toMatchObject({ deviceId: "d", outcome: "failed" });
    expect(push.handled).toBe(0);
  } finally {
    await core.close();
    await new Promise((resolve) => proxy.close(resolve));
    await push.close();
  }
});

it("allows only https push services on the listed hosts, on port 443 unless an entry names another", () => {
  const hosts = ["fcm.googleapis.com", "*.push.apple.com", "push.internal.example:8443"];
  expect(pushServiceAllowed("https://fcm.googleapis.com:443/fcm/send/abc", hosts)).toBe(true);
  expect(pushServiceAllowed("https://fcm.googleapis.com:8443/fcm/send/abc", hosts)).toBe(false);
  expect(pushServiceAllowed("https://push.internal.example:8443/p/1", hosts)).toBe(true);
  expect(pushServiceAllowed("https://push.internal.example/p/1", hosts)).toBe(false);
  expect(pushServiceAllowed("https://user@fcm.googleapis.com/fcm/send/abc", hosts)).toBe(false);
  expect(pushServiceAllowed("https://fcm.googleapis.com/fcm/send/abc", hosts)).toBe(true);
  expect(pushServiceAllowed("https://web.push.apple.com/QO", hosts)).toBe(true);
  expect(pushServiceAllowed("https://push.apple.com.evil.test/x", hosts)).toBe(false);
  expect(pushServiceAllowed("https://evilpush.apple.com/x", hosts)).toBe(false);
  expect(pushServiceAllowed("http://fcm.googleapis.com/fcm/send/abc", hosts)).toBe(false);
  expect(pushServiceAllowed("not a url", hosts)).toBe(false);
});

import { sql } from "kysely";
import { expect, it, vi } from "vitest";
import { useTestApp, type TestApp } from "../../http/testing-app.js";
import { describeEachDatabase, openSecondNode, type TestCore } from "../../testing/databases.js";
import { enrollSimulatedUser } from "../../testing/device.js";
import { expiredChallengeRow, placeTokenInState, type TestTenant } from "../../testing/fixtures.js";
import { APPROVAL_GRACE_MS } from "../auth/service.js";
import { installerPrincipal } from "../operators/access.js";
import { CHALLENGE_RETENTION_MS, CHALLENGE_TTL_MS, FRAUD_PUSH_BLOCK_MS, MAX_OPEN_CHALLENGES_PER_USER } from "./service.js";

describeEachDatabase("Push OTP over REST", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  let pushKey: string;
  let plainKey: string;

  const enrolledUser = (userId: string, pushPermitted: boolean) => enrollSimulatedUser(core, api, t.virtualServerId, userId, { pushPermitted });

  const authenticate = (key: string, userId: string, passcode = "") => api.call("POST", "/api/v1/auth", key, { userId, passcode, sourceAddress: "198.51.100.23" });
  const outcome = (key: string, id: string, wait = 0) => api.call("GET", `/api/v1/auth/challenges/${id}?wait=${wait}`, key);

  // The first word of each statement the core runs while `recording`.
  const statements: string[] = [];
  let recording = false;

  useTestApp(
    kind,
    "Push",
    async (setting) => {
      ({ core, api, t } = setting);
      await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 40 });
      pushKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "portal", resourceName: "Staff portal", kind: "rest", pushOtp: true })).apiKey!;
      plainKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "legacy", kind: "rest", pushOtp: false })).apiKey!;
    },
    { log: (event) => void (recording && statements.push(event.query.sql.trim().split(/\s+/)[0]!.toLowerCase())) },
  );

  it("sends an empty passcode to the phone: the device sees resource, source and number, approves with its passcode, and the login is accepted", async () => {
    const { device, serial } = await enrolledUser("pia", true);
    const pending = await authenticate(pushKey, "pia");
    expect(pending.json).toMatchObject({ result: "pending", numberToMatch: expect.stringMatching(/^\d{2}$/) });
    expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "pending" });
    const polled = await device.poll();
    expect(polled.json.items).toEqual([expect.objectContaining({ id: pending.json.challengeId, resourceName: "Staff portal", source: "198.51.100.23", numberToMatch: pending.json.numberToMatch, serials: [serial] })]);
    const answered = await device.answer(pending.json.challengeId, "approve", serial, device.passcode());
    expect(answered.json).toEqual({ status: "approved" });
    expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "accept", serial });
    // A closed challenge cannot be answered again, and its passcode is spent.
    expect((await device.answer(pending.json.challengeId, "deny")).json.error.code).toBe("CHALLENGE_CLOSED");
    expect((await authenticate(pushKey, "pia", device.passcode())).json).toMatchObject({ result: "reject", reason: "replayed" });
  });

  /** tessera_push_logins_ended_total for one outcome. */
  const endedCount = async (outcome: string) =>
    Number(new RegExp(`^tessera_push_logins_ended_total\\{outcome="${outcome}"\\} (\\d+)$`, "m").exec((await core.services.metrics.render()).body)?.[1] ?? 0);

  it("rejects on deny, on deny-and-report (audited for operators) and on expiry", async () => {
    const counted = Object.fromEntries(await Promise.all(["denied", "fraud", "expired"].map(async (outcome) => [outcome, await endedCount(outcome)] as const)));
    const { device } = await enrolledUser("quinn", true);
    const denied = await authenticate(pushKey, "quinn");
    await device.answer(denied.json.challengeId, "deny");
    expect((await outcome(pushKey, denied.json.challengeId)).json).toMatchObject({ status: "reject", reason: "denied" });

    const ignored = await authenticate(pushKey, "quinn");
    core.clock.advance(61_000);
    expect((await outcome(pushKey, ignored.json.challengeId)).json).toMatchObject({ status: "reject", reason: "expired" });
    expect((await device.answer(ignored.json.challengeId, "deny")).json.error.code).toBe("CHALLENGE_CLOSED");

    const fraud = await authenticate(pushKey, "quinn");
    await device.answer(fraud.json.challengeId, "fraud");
    expect((await outcome(pushKey, fraud.json.challengeId)).json).toMatchObject({ status: "reject" });
    const reports = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.fraud_reported`, t.apiKeys.auditor);
    expect(reports.json.items).toHaveLength(1);

    // How each ended is in the trail: the expiry too, once a node's sweep closes it.
    const ended = async (action: string) =>
      (await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=${action}`, t.apiKeys.auditor)).json.items.filter(
        (item: { details: { challengeId: string } }) => [denied, fraud, ignored].some((login) => login.json.challengeId === item.details.challengeId),
      );
    expect(await ended("auth.push_denied")).toEqual([expect.objectContaining({ reason: "the user denied the login", details: expect.objectContaining({ challengeId: denied.json.challengeId, result: "reject", resourceName: "Staff portal", source: "198.51.100.23" }) })]);
    expect(await ended("auth.push_expired")).toEqual([]);
    // The sweep closes every login past its time, earlier tests' too: each is counted once.
    const swept = await core.services.push.closeExpired();
    expect(swept).toBeGreaterThanOrEqual(1);
    expect(await ended("auth.push_expired")).toEqual([expect.objectContaining({ details: expect.objectContaining({ challengeId: ignored.json.challengeId, result: "reject", source: "198.51.100.23" }) })]);
    expect(await core.services.push.closeExpired()).toBe(0);
    expect((await outcome(pushKey, ignored.json.challengeId)).json).toMatchObject({ status: "reject", reason: "expired" });
    // Counted in the metrics by how each ended.
    expect(await endedCount("denied")).toBe(counted.denied! + 1);
    expect(await endedCount("fraud")).toBe(counted.fraud! + 1);
    expect(await endedCount("expired")).toBe(counted.expired! + swept);
  });

  it("lets a challenge live as long as its application's push timeout says", async () => {
    await enrolledUser("nia", true);
    const quickKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "kiosk", kind: "rest", pushOtp: true, pushTimeoutSeconds: 20 })).apiKey!;
    const started = core.clock.nowMs();
    const pending = await authenticate(quickKey, "nia");
    expect(Date.parse(pending.json.expiresAt) - started).toBe(20_000);
    core.clock.advance(19_000);
    expect((await outcome(quickKey, pending.json.challengeId)).json).toEqual({ status: "pending" });
    core.clock.advance(1_000);
    expect((await outcome(quickKey, pending.json.challengeId)).json).toMatchObject({ status: "reject", reason: "expired" });
  });

  it("closes a challenge whose login ended with a typed passcode: only the application's own, for that user, still open", async () => {
    const { device, serial } = await enrolledUser("oda", true);
    await enrolledUser("pim", true);
    const pending = await authenticate(pushKey, "oda");
    const id = pending.json.challengeId as string;
    const portal = (await core.services.storage.db.selectFrom("applications").select(["id", "virtual_server_id"]).where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow());
    const legacy = (await core.services.storage.db.selectFrom("applications").select("id").where("name", "=", "legacy").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow());
    // Another user's name, another application, a made-up id: nothing closes.
    const typedBy = (userId: string) => ({ by: "typed" as const, userId });
    expect(await core.services.push.cancel(id, { id: portal.id, virtualServerId: t.virtualServerId }, typedBy("pim"))).toBe("not_found");
    expect(await core.services.push.cancel(id, { id: legacy.id, virtualServerId: t.virtualServerId }, typedBy("oda"))).toBe("not_found");
    expect(await core.services.push.cancel("chl_nothing", { id: portal.id, virtualServerId: t.virtualServerId }, typedBy("oda"))).toBe("not_found");
    expect((await outcome(pushKey, id)).json).toEqual({ status: "pending" });

    expect(await core.services.push.cancel(id, { id: portal.id, virtualServerId: t.virtualServerId }, typedBy("oda"))).toBe("cancelled");
    expect(await core.services.push.cancel(id, { id: portal.id, virtualServerId: t.virtualServerId }, typedBy("oda"))).toBe("closed");
    expect((await outcome(pushKey, id)).json).toMatchObject({ status: "reject", reason: "cancelled" });
    expect((await device.poll()).json.items).toEqual([]);
    expect((await device.answer(id, "approve", serial, device.passcode())).json.error.code).toBe("CHALLENGE_CLOSED");
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.push_cancelled`, t.apiKeys.auditor);
    expect(trail.json.items).toEqual([expect.objectContaining({ reason: "the user typed the passcode instead", details: expect.objectContaining({ challengeId: id, result: "reject" }) })]);
    // Nor does the sweep of expired challenges touch it later.
    core.clock.advance(61_000);
    await core.services.push.closeExpired();
    expect((await outcome(pushKey, id)).json).toMatchObject({ status: "reject", reason: "cancelled" });
  });

  it("lets the application withdraw its own open push login over REST, and no other", async () => {
    const { device, serial } = await enrolledUser("wren", true);
    const pending = await authenticate(pushKey, "wren");
    const id = pending.json.challengeId as string;
    const withdraw = (key: string, challengeId: string) => api.call("DELETE", `/api/v1/auth/challenges/${challengeId}`, key);
    expect((await withdraw(plainKey, id)).json.error.code).toBe("CHALLENGE_NOT_FOUND");
    expect((await withdraw(pushKey, "chl_nothing")).json.error.code).toBe("CHALLENGE_NOT_FOUND");
    expect((await withdraw("tak_bogus", id)).status).toBe(401);
    expect((await outcome(pushKey, id)).json).toEqual({ status: "pending" });
    expect((await withdraw(pushKey, id)).status).toBe(204);
    expect((await withdraw(pushKey, id)).json.error.code).toBe("CHALLENGE_CLOSED");
    expect((await outcome(pushKey, id)).json).toMatchObject({ status: "reject", reason: "cancelled" });
    expect((await device.answer(id, "approve", serial, device.passcode())).json.error.code).toBe("CHALLENGE_CLOSED");
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.push_cancelled`, t.apiKeys.auditor);
    expect(trail.json.items.find((item: { details: { challengeId: string } }) => item.details.challengeId === id)).toMatchObject({ reason: "the application withdrew the sign-in request", targetId: "wren" });
  });

  it("ends the open push logins of an application that is deleted, so no phone offers a login nobody can read", async () => {
    const { device, serial } = await enrolledUser("gone-app-user", true);
    const doomed = await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "doomed", resourceName: "Doomed portal", kind: "rest", pushOtp: true });
    const pending = await authenticate(doomed.apiKey!, "gone-app-user");
    const id = pending.json.challengeId as string;
    const waiting = outcome(doomed.apiKey!, id, 5);
    expect((await device.poll()).json.items.map((item: { id: string }) => item.id)).toContain(id);
    await core.services.applications.delete(installerPrincipal, doomed.id);
    // The waiting long poll hears it ended; the phone no longer lists it and cannot approve it.
    expect((await waiting).json).toMatchObject({ status: "reject", reason: "cancelled" });
    expect((await device.poll()).json.items.map((item: { id: string }) => item.id)).not.toContain(id);
    expect((await device.answer(id, "approve", serial, device.passcode())).json.error.code).toBe("CHALLENGE_CLOSED");
    expect((await authenticate(doomed.apiKey!, "gone-app-user")).status).toBe(401);
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.push_cancelled`, t.apiKeys.auditor);
    expect(trail.json.items.find((item: { details: { challengeId: string } }) => item.details.challengeId === id)).toMatchObject({ reason: "the application was deleted", targetId: "gone-app-user" });
  });

  it("ends a push login opened for an application deleted meanwhile (by a node that had not heard yet) at the next sweep, not at its expiry", async () => {
    const { device } = await enrolledUser("late-app-user", true);
    const late = await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "late", kind: "rest", pushOtp: true });
    const pending = await authenticate(late.apiKey!, "late-app-user");
    const id = pending.json.challengeId as string;
    // As if the deletion's look for open logins ran before this one was opened: the
    // application's row goes, the login stays open.
    await core.storage.db.deleteFrom("applications").where("id", "=", late.id).execute();
    expect((await device.poll()).json.items.map((item: { id: string }) => item.id)).toContain(id);
    expect(await core.services.push.closeOrphaned()).toBe(1);
    expect((await device.poll()).json.items.map((item: { id: string }) => item.id)).not.toContain(id);
    const row = await core.storage.db.selectFrom("challenges").select("status").where("id", "=", id).executeTakeFirstOrThrow();
    expect(row.status).toBe("cancelled");
    // Nothing left to end: the next sweep finds none.
    expect(await core.services.push.closeOrphaned()).toBe(0);
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.push_cancelled`, t.apiKeys.auditor);
    expect(trail.json.items.find((item: { details: { challengeId: string } }) => item.details.challengeId === id)).toMatchObject({ reason: "the application was deleted", targetId: "late-app-user" });
  });

  it("tells a device on the live connection of each new challenge and of the end of each it was told of", async () => {
    const { device, serial } = await enrolledUser("liv", true);
    const events: string[] = [];
    let stop = () => {};
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    // The connection's look every few seconds (setInterval) never comes here: what the
    // device hears, it hears because it was woken.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const streaming = core.services.push.live(device.deviceId, { challenge: (challenge) => events.push(`challenge ${challenge.id}`), ended: (id) => events.push(`ended ${id}`) }, stopped);
    // Waited for by hand: expect.poll moves faked timers on as it polls.
    const seen = async (event: string) => {
      for (const deadline = Date.now() + 5_000; !events.includes(event) && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(events).toContain(event);
    };
    try {
      const approved = (await authenticate(pushKey, "liv")).json.challengeId as string;
      await seen(`challenge ${approved}`);
      // The device that answers hears of the end at its connection's next look (here,
      // when the next challenge comes); the others (cancel below) at once.
      await device.answer(approved, "approve", serial, device.passcode());

      const portal = await core.services.storage.db.selectFrom("applications").select("id").where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
      const cancelled = (await authenticate(pushKey, "liv")).json.challengeId as string;
      await seen(`challenge ${cancelled}`);
      await core.services.push.cancel(cancelled, { id: portal.id, virtualServerId: t.virtualServerId }, { by: "typed", userId: "liv" });
      await seen(`ended ${cancelled}`);
      // Each once, in order: the end of the first before the second challenge.
      expect(events).toEqual([`challenge ${approved}`, `ended ${approved}`, `challenge ${cancelled}`, `ended ${cancelled}`]);
    } finally {
      stop();
      await streaming;
      vi.useRealTimers();
    }
  });

  it("refuses an approval whose passcode is wrong, and one signed by another device", async () => {
    const { device, serial } = await enrolledUser("rae", true);
    const other = await enrolledUser("sol", true);
    const pending = await authenticate(pushKey, "rae");
    const wrong = device.passcode() === "000000" ? "111111" : "000000";
    expect((await device.answer(pending.json.challengeId, "approve", serial, wrong)).json.error.code).toBe("CHALLENGE_ANSWER_INVALID");
    expect((await other.device.answer(pending.json.challengeId, "approve", other.serial, other.device.passcode())).json.error.code).toBe("CHALLENGE_NOT_FOUND");
    expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "pending" });
  });

  it("takes push answers that arrive together with logins in one group commit, each on its own merits", async () => {
    const approver = await enrolledUser("ada", true);
    const guesser = await enrolledUser("bo", true);
    const denier = await enrolledUser("cy", true);
    const typist = await enrolledUser("di", true);
    const [approving, guessing, denying] = (await Promise.all(["ada", "bo", "cy"].map((userId) => authenticate(pushKey, userId)))).map((pending) => pending.json.challengeId as string);
    const application = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "legacy").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const answer = async (who: Awaited<ReturnType<typeof enrolledUser>>, challengeId: string, body: { decision: "approve" | "deny"; serial?: string; otp?: string }) => {
      const signed = await who.device.sign("POST", `/device/v1/challenges/${challengeId}/answer`, body);
      return () => core.services.push.answer(challengeId, signed, body).catch((error: { code: string }) => error.code);
    };
    const badCode = guesser.device.passcode() === "000000" ? "111111" : "000000";
    const calls = [
      await answer(approver, approving!, { decision: "approve", serial: approver.serial, otp: approver.device.passcode() }),
      await answer(guesser, guessing!, { decision: "approve", serial: guesser.serial, otp: badCode }),
      await answer(denier, denying!, { decision: "deny" }),
      () => core.services.auth.authenticate({ application, userId: "di", passcode: typist.device.passcode(), source: "198.51.100.24", method: "rest" }),
    ];
    // Started in one turn of the event loop, so that on SQLite they meet in one group
    // commit; the wrong passcode is refused without rolling back the others.
    statements.length = 0;
    recording = true;
    const [approved, refused, denied, typed] = await Promise.all(calls.map((call) => call()));
    recording = false;
    if (kind === "sqlite") {
      expect(statements.filter((statement) => statement === "commit")).toHaveLength(1);
      expect(statements).not.toContain("rollback");
    }
    expect(approved).toEqual({ status: "approved" });
    expect(refused).toBe("CHALLENGE_ANSWER_INVALID");
    expect(denied).toEqual({ status: "denied" });
    expect(typed).toMatchObject({ result: "accept", serial: typist.serial });
    expect((await outcome(pushKey, approving!)).json).toEqual({ status: "accept", serial: approver.serial });
    expect((await outcome(pushKey, guessing!)).json).toEqual({ status: "pending" });
    expect((await outcome(pushKey, denying!)).json).toEqual({ status: "reject", reason: "denied" });

    // The same approval twice in one group: the second finds the challenge closed before
    // it writes anything.
    const again = await authenticate(pushKey, "bo");
    const twice = await answer(guesser, again.json.challengeId, { decision: "approve", serial: guesser.serial, otp: guesser.device.passcode() });
    statements.length = 0;
    recording = true;
    const both = await Promise.all([twice(), twice()]);
    recording = false;
    expect(both.map((result) => (typeof result === "string" ? result : result.status)).sort()).toEqual(["CHALLENGE_CLOSED", "approved"]);
    // On SQLite one commit: the second found the challenge closed before writing, and
    // rolled nothing back.
    if (kind === "sqlite") expect(statements.filter((statement) => statement === "rollback" || statement === "commit")).toEqual(["commit"]);
    await core.services.audit.settle();
    const trail = await core.storage.db.selectFrom("audit_log").select(["action", "details"]).where("action", "in", ["auth.push_approved", "auth.push_denied"]).execute();
    const ofChallenge = (id: string) => trail.filter((row) => JSON.parse(row.details!).challengeId === id).map((row) => row.action);
    expect([approving, guessing, denying, again.json.challengeId].map(ofChallenge)).toEqual([["auth.push_approved"], [], ["auth.push_denied"], ["auth.push_approved"]]);
    // Each approval's step is spent: typed again, the passcode is a replay.
    expect((await authenticate(plainKey, "ada", approver.device.passcode())).json).toMatchObject({ result: "reject", reason: "replayed" });
    expect((await authenticate(plainKey, "bo", guesser.device.passcode())).json).toMatchObject({ result: "reject", reason: "replayed" });
  });

  it("tells the user to type the passcode where push is off: at the application, or on the device", async () => {
    await enrolledUser("tao", false);
    expect((await authenticate(pushKey, "tao")).json).toMatchObject({ result: "reject", reason: "push_unavailable" });
    await enrolledUser("uma", true);
    expect((await authenticate(plainKey, "uma")).json).toMatchObject({ result: "reject", reason: "push_unavailable" });
  });

  it("keeps one application from reading another's challenges, and from waiting on them", async () => {
    await enrolledUser("vic", true);
    const pending = await authenticate(pushKey, "vic");
    expect((await outcome(plainKey, pending.json.challengeId)).json).toMatchObject({ status: "reject", reason: "unknown_challenge" });
    // Answered at once, not after the wait or when the user answers (which would tell
    // it when the user did): a wait of 60 s would outlast the test's timeout.
    expect((await outcome(plainKey, pending.json.challengeId, 60)).json).toMatchObject({ status: "reject", reason: "unknown_challenge" });
    expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "pending" });
  });

  it("keeps a challenge a day past its expiry, answered or not, then prunes it", async () => {
    const { device, serial } = await enrolledUser("wes", true);
    const countOf = async (ids: string[]) => (await core.storage.db.selectFrom("challenges").select("id").where("id", "in", ids).execute()).length;
    const approved = (await authenticate(pushKey, "wes")).json.challengeId as string;
    await device.answer(approved, "approve", serial, device.passcode());
    const ignored = (await authenticate(pushKey, "wes")).json.challengeId as string;
    core.clock.advance(CHALLENGE_TTL_MS + CHALLENGE_RETENTION_MS - 1_000);
    const recent = (await authenticate(pushKey, "wes")).json.challengeId as string;
    // (Challenges of the tests before this one are older, and go now.)
    await core.services.push.pruneEnded();
    expect(await countOf([approved, ignored, recent])).toBe(3);

    core.clock.advance(2_000);
    expect(await core.services.push.pruneEnded()).toBe(2);
    expect(await countOf([approved, ignored, recent])).toBe(1);
    expect((await outcome(pushKey, recent)).json).toEqual({ status: "pending" });
    expect((await outcome(pushKey, approved)).json).toMatchObject({ status: "reject", reason: "unknown_challenge" });
  });

  it("lets a RADIUS client in challenge mode in once for the approved user, and for nobody else", async () => {
    const { device, serial } = await enrolledUser("yan", true);
    await enrolledUser("zed", true);
    const portal = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const legacy = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "legacy").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const redeem = (userId: string, challengeId: string, application = portal) =>
      core.services.auth.redeemChallenge({ application, userId, challengeId, source: "198.51.100.23", method: "radius" }, 60_000);

    const approved = (await authenticate(pushKey, "yan")).json.challengeId as string;
    // Another user, another application or a State we never gave: at once, without waiting for the answer.
    expect(await redeem("zed", approved)).toEqual({ result: "reject", reason: "unknown_challenge" });
    expect(await redeem("nobody", approved)).toEqual({ result: "reject", reason: "unknown_challenge" });
    expect(await redeem("yan", approved, legacy)).toEqual({ result: "reject", reason: "unknown_challenge" });
    expect(await redeem("yan", `${approved}\0`)).toEqual({ result: "reject", reason: "unknown_challenge" });
    await device.answer(approved, "approve", serial, device.passcode());
    expect(await redeem("zed", approved)).toEqual({ result: "reject", reason: "unknown_challenge" });
    expect(await redeem("yan", approved)).toEqual({ result: "accept", serial, userId: "yan" });
    expect(await redeem("yan", approved)).toEqual({ result: "reject", reason: "redeemed" });
    // The REST client may still read how it ended.
    expect((await outcome(pushKey, approved)).json).toEqual({ status: "accept", serial });

    // A passcode typed in the answer ends the push login even when the phone approved it
    // first: the approval no longer lets the State in.
    const overtaken = (await authenticate(pushKey, "yan")).json.challengeId as string;
    await device.answer(overtaken, "approve", serial, device.passcode());
    expect(await core.services.push.cancel(overtaken, { id: portal.id, virtualServerId: t.virtualServerId }, { by: "typed", userId: "yan" })).toBe("closed");
    expect(await redeem("yan", overtaken)).toEqual({ result: "reject", reason: "redeemed" });

    const denied = (await authenticate(pushKey, "yan")).json.challengeId as string;
    await device.answer(denied, "deny");
    expect(await redeem("yan", denied)).toEqual({ result: "reject", reason: "denied" });
    const ignored = (await authenticate(pushKey, "yan")).json.challengeId as string;
    core.clock.advance(CHALLENGE_TTL_MS);
    expect(await redeem("yan", ignored)).toEqual({ result: "reject", reason: "expired" });

    const trail = (await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}`, t.apiKeys.auditor)).json.items.filter(
      (item: { details: { challengeId?: string; method?: string } | null }) => item.details?.method === "radius" && item.details.challengeId === approved,
    );
    expect(trail.map((item: { action: string; reason: string | null }) => [item.action, item.reason]).reverse()).toEqual([
      ["auth.reject", "unknown_challenge"],
      ["auth.reject", "unknown_challenge"],
      ["auth.reject", "unknown_challenge"],
      ["auth.reject", "unknown_challenge"],
      ["auth.accept", null],
      ["auth.reject", "redeemed"],
    ]);
  });

  it("takes an approval only within the challenge's life and a minute after, and only while the token that gave it is active", async () => {
    const { device, serial } = await enrolledUser("uri", true);
    const portal = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const redeem = (challengeId: string) => core.services.auth.redeemChallenge({ application: portal, userId: "uri", challengeId, source: "198.51.100.23", method: "radius" }, 0);
    const approvedLogin = async () => {
      const id = (await authenticate(pushKey, "uri")).json.challengeId as string;
      expect((await device.answer(id, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
      return id;
    };

    // Suspended after the approval: neither the RADIUS State nor the REST outcome lets the user in.
    const beforeSuspension = await approvedLogin();
    await core.services.tokenLifecycle.suspend(installerPrincipal, serial);
    expect(await redeem(beforeSuspension)).toEqual({ result: "reject", reason: "no_token" });
    expect((await outcome(pushKey, beforeSuspension)).json).toEqual({ status: "reject", reason: "no_token" });
    await core.services.tokenLifecycle.reactivate(installerPrincipal, serial);
    expect((await outcome(pushKey, beforeSuspension)).json).toEqual({ status: "accept", serial });
    expect(await redeem(beforeSuspension)).toEqual({ result: "accept", serial, userId: "uri" });

    // A State kept: good until a minute after the challenge would have expired, not after.
    const late = await approvedLogin();
    const kept = await approvedLogin();
    core.clock.advance(CHALLENGE_TTL_MS + APPROVAL_GRACE_MS);
    expect((await outcome(pushKey, late)).json).toEqual({ status: "accept", serial });
    expect(await redeem(late)).toEqual({ result: "accept", serial, userId: "uri" });
    core.clock.advance(1);
    expect(await redeem(kept)).toEqual({ result: "reject", reason: "expired" });
    const expiredBefore = await refusals("rest", "expired");
    expect((await outcome(pushKey, kept)).json).toEqual({ status: "reject", reason: "expired" });
    expect(await refusals("rest", "expired")).toBe(expiredBefore + 1);
    await core.services.audit.settle();
    const refused = await core.storage.db.selectFrom("audit_log").select(["reason", "details"]).where("action", "=", "auth.reject").where("target_id", "=", "uri").where("details", "like", `%"method":"rest"%`).orderBy("seq").execute();
    expect(refused.map((row) => [row.reason, JSON.parse(row.details!).challengeId])).toEqual([["no_token", beforeSuspension], ["expired", kept]]);
  });

  it("takes an approval only while the token that gave it is still the user's: not once it was returned and issued to someone else", async () => {
    const { device, serial } = await enrolledUser("ugo", true);
    const portal = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const [forRest, forRadius] = [(await authenticate(pushKey, "ugo")).json.challengeId as string, (await authenticate(pushKey, "ugo")).json.challengeId as string];
    for (const id of [forRest, forRadius]) expect((await device.answer(id, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    // Within the minute: the token goes back to inventory and is active again, another user's.
    await core.services.tokenLifecycle.revoke(installerPrincipal, serial, { to: "inventory", reason: "left the company" });
    const other = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "vic" });
    const vic = await core.storage.db.selectFrom("tokens").select("user_pk").where("serial", "=", other).executeTakeFirstOrThrow();
    await core.storage.db.updateTable("tokens").set({ state: "active", user_pk: vic.user_pk }).where("serial", "=", serial).execute();
    const refusedBefore = await refusals("rest", "no_token");
    expect((await outcome(pushKey, forRest)).json).toEqual({ status: "reject", reason: "no_token" });
    expect(await core.services.auth.redeemChallenge({ application: portal, userId: "ugo", challengeId: forRadius, source: "198.51.100.23", method: "radius" }, 0)).toEqual({ result: "reject", reason: "no_token" });
    // Both refusals in the user's trail (not the token's: it is someone else's now), and counted.
    expect(await refusals("rest", "no_token")).toBe(refusedBefore + 1);
    await core.services.audit.settle();
    const trail = await core.storage.db.selectFrom("audit_log").select(["action", "reason", "target_type", "target_id", "token_serial", "details"]).where("action", "=", "auth.reject").where("target_id", "=", "ugo").orderBy("seq").execute();
    expect(trail.map((row) => ({ ...row, details: JSON.parse(row.details!) }))).toEqual([
      { action: "auth.reject", reason: "no_token", target_type: "user", target_id: "ugo", token_serial: null, details: expect.objectContaining({ method: "rest", challengeId: forRest, push: true, approvedBy: serial, source: "198.51.100.23" }) },
      { action: "auth.reject", reason: "no_token", target_type: "user", target_id: "ugo", token_serial: null, details: expect.objectContaining({ method: "radius", challengeId: forRadius, push: true }) },
    ]);
  });

  /** tessera_authentications_total for one method and refusal reason. */
  const refusals = async (method: string, reason: string) =>
    Number(new RegExp(`^tessera_authentications_total\\{method="${method}",result="reject",reason="${reason}"\\} (\\d+)$`, "m").exec((await core.services.metrics.render()).body)?.[1] ?? 0);

  it("asks the phone again once the lock duration of its token has passed, as a typed passcode would find it", async () => {
    const { device, serial } = await enrolledUser("lou", true);
    await core.storage.db.updateTable("tokens").set({ state: "locked", failures: 3, locked_until: core.clock.nowMs() + 900_000 }).where("serial", "=", serial).execute();
    expect((await authenticate(pushKey, "lou")).json).toMatchObject({ result: "reject", reason: "push_unavailable" });
    core.clock.advance(900_000);
    const pending = await authenticate(pushKey, "lou");
    expect(pending.json).toMatchObject({ result: "pending" });
    expect(await core.storage.db.selectFrom("tokens").select(["state", "failures", "locked_until"]).where("serial", "=", serial).executeTakeFirstOrThrow()).toEqual({ state: "active", failures: 0, locked_until: null });
    expect((await device.answer(pending.json.challengeId, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "accept", serial });
    const unlocked = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=token.unlock`, t.apiKeys.auditor);
    expect(unlocked.json.items).toEqual([expect.objectContaining({ reason: "lock duration passed", targetId: serial })]);
  });

  it("starts the failures of the user's other tokens afresh when a push login is approved", async () => {
    const { device, serial } = await enrolledUser("rho", true);
    const other = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "rho" });
    await core.storage.db.updateTable("tokens").set({ failures: 2 }).where("serial", "=", other).execute();
    const pending = await authenticate(pushKey, "rho");
    expect((await device.answer(pending.json.challengeId, "approve", serial, device.passcode())).json).toEqual({ status: "approved" });
    expect(await core.storage.db.selectFrom("tokens").select(["state", "failures"]).where("serial", "=", other).executeTakeFirstOrThrow()).toEqual({ state: "active", failures: 0 });
  });

  it("files a denial under the user when the device holds no active token of theirs any more", async () => {
    const { device, serial } = await enrolledUser("hal", true);
    const pending = await authenticate(pushKey, "hal");
    await core.services.tokenLifecycle.suspend(installerPrincipal, serial);
    expect((await device.answer(pending.json.challengeId, "deny")).json).toEqual({ status: "denied" });
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&action=auth.push_denied`, t.apiKeys.auditor);
    expect(trail.json.items.filter((item: { details: { challengeId: string } }) => item.details.challengeId === pending.json.challengeId)).toEqual([
      expect.objectContaining({ targetType: "user", targetId: "hal", tokenSerial: null, reason: "the user denied the login" }),
    ]);
  });

  it("sends no push to a user for half an hour after they reported one as fraud, and files the report under their token", async () => {
    const { device, serial } = await enrolledUser("fay", true);
    const { device: otherDevice } = await enrolledUser("gus", true);
    const reported = await authenticate(pushKey, "fay");
    expect((await device.answer(reported.json.challengeId, "fraud")).json).toEqual({ status: "fraud" });
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&serial=${serial}&action=auth.fraud_reported`, t.apiKeys.auditor);
    expect(trail.json.items).toEqual([expect.objectContaining({ targetId: serial, details: expect.objectContaining({ challengeId: reported.json.challengeId }) })]);

    // Whoever asked again gets nothing onto the phone; the user still gets in by typing.
    expect((await authenticate(pushKey, "fay")).json).toEqual({ result: "reject", reason: "push_blocked", message: "Push OTP is not available for you here: type the passcode from your app" });
    expect((await device.poll()).json.items).toEqual([]);
    expect((await authenticate(pushKey, "fay", device.passcode())).json).toMatchObject({ result: "accept", serial });
    // Nobody else is affected.
    const other = await authenticate(pushKey, "gus");
    expect(other.json).toMatchObject({ result: "pending" });
    await otherDevice.answer(other.json.challengeId, "deny");

    core.clock.advance(FRAUD_PUSH_BLOCK_MS - 1);
    expect((await authenticate(pushKey, "fay")).json).toMatchObject({ result: "reject", reason: "push_blocked" });
    core.clock.advance(1);
    expect((await authenticate(pushKey, "fay")).json).toMatchObject({ result: "pending" });
  });

  it("denies the user's other waiting push logins with a fraud report, so none is left on the phone to approve by mistake", async () => {
    const { device, serial } = await enrolledUser("ida", true);
    const { device: otherDevice } = await enrolledUser("jon", true);
    const [reported, second, third] = [await authenticate(pushKey, "ida"), await authenticate(pushKey, "ida"), await authenticate(pushKey, "ida")];
    const strangers = await authenticate(pushKey, "jon");
    const deniedBefore = await endedCount("denied");
    // The application waits on one of them as the report comes in.
    const waiting = outcome(pushKey, third.json.challengeId, 10);
    // Every login the report ended wakes its waits at once (here and, over NOTIFY, on other nodes).
    const changed = vi.spyOn(core.services.pushHub, "challengeChanged");
    try {
      expect((await device.answer(reported.json.challengeId, "fraud")).json).toEqual({ status: "fraud" });
      expect(changed.mock.calls.map(([id]) => id).sort()).toEqual([reported.json.challengeId, second.json.challengeId, third.json.challengeId].sort());
    } finally {
      changed.mockRestore();
    }
    expect((await waiting).json).toEqual({ status: "reject", reason: "denied" });
    expect((await outcome(pushKey, second.json.challengeId)).json).toEqual({ status: "reject", reason: "denied" });
    expect((await device.poll()).json.items).toEqual([]);
    expect((await device.answer(second.json.challengeId, "approve", serial, device.passcode())).json.error.code).toBe("CHALLENGE_CLOSED");
    expect(await endedCount("denied")).toBe(deniedBefore + 2);
    // Filed under the reporting token, each naming its own login.
    await core.services.audit.settle();
    const trail = await api.call("GET", `/api/v1/audit?virtualServerId=${t.virtualServerId}&serial=${serial}&action=auth.push_denied`, t.apiKeys.auditor);
    expect(trail.json.items.map((item: { details: { challengeId: string }; reason: string }) => [item.details.challengeId, item.reason]).sort()).toEqual(
      [second.json.challengeId, third.json.challengeId].sort().map((id) => [id, "denied with the user's fraud report on another push login"]),
    );
    // Another user's waiting login is not touched.
    expect((await outcome(pushKey, strangers.json.challengeId)).json).toEqual({ status: "pending" });
    await otherDevice.answer(strangers.json.challengeId, "deny");
  });

  // On SQLite the report and the request have the one writer in turn.
  if (kind === "postgres")
    it("leaves no push login waiting that another node opened while the user reported fraud", async () => {
      const { device } = await enrolledUser("kai", true);
      const reported = await authenticate(pushKey, "kai");
      const user = await core.storage.db.selectFrom("users").select("id").where("user_id", "=", "kai").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
      const application = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
      const node2 = await openSecondNode(core);
      let opened: Awaited<ReturnType<typeof node2.services.auth.authenticate>> | undefined;
      try {
        // Node 2's push request holds the user's row and has opened its challenge, not yet
        // committed, when the report arrives on node 1: the report waits for it, then
        // denies that challenge too.
        let answered: Promise<unknown> | undefined;
        await node2.services.storage.db.transaction().execute(async (trx) => {
          await trx.selectFrom("users").select("id").where("id", "=", user.id).forUpdate().execute();
          const holder = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
          answered = device.answer(reported.json.challengeId, "fraud");
          // The report waits on this transaction, and on nothing else.
          const blocked = () => sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity where ${holder}::int = any(pg_blocking_pids(pid))`.execute(core.storage.db).then((r) => r.rows[0]!.waiting);
          await expect.poll(blocked, { timeout: 10_000 }).toBe(1);
          const row = await trx.selectFrom("challenges").selectAll().where("id", "=", reported.json.challengeId).executeTakeFirstOrThrow();
          await trx.insertInto("challenges").values({ ...row, id: "chl_kai_node2", status: "pending", created_at: core.clock.nowMs(), expires_at: core.clock.nowMs() + CHALLENGE_TTL_MS }).execute();
        });
        expect(((await answered) as { json: unknown }).json).toEqual({ status: "fraud" });
        // And a request after the report, on either node, is refused.
        opened = await node2.services.auth.authenticate({ application, userId: "kai", passcode: "", source: "198.51.100.30", method: "rest" });
      } finally {
        await node2.close();
      }
      expect((await core.storage.db.selectFrom("challenges").select("status").where("id", "=", "chl_kai_node2").executeTakeFirstOrThrow()).status).toBe("denied");
      expect(opened).toMatchObject({ result: "reject", reason: "push_blocked" });
    });

  // SQLite has one writer at a time: nothing can interleave there.
  if (kind === "postgres")
    it("takes an approval's token rows in serial order, as a wrong passcode at the same user does, so the two cannot deadlock", async () => {
      const { device, serial } = await enrolledUser("lin", true);
      // An email token (EM..., before the phone's MP... by serial) that has failures to reset.
      const other = await placeTokenInState(core.services, t.virtualServerId, "active", { type: "email", userId: "lin" });
      expect(other < serial).toBe(true);
      await core.storage.db.updateTable("tokens").set({ failures: 1 }).where("serial", "=", other).execute();
      const pending = await authenticate(pushKey, "lin");
      let answered: Promise<{ status: number; json: { status?: string } }> | undefined;
      // A wrong passcode's transaction counts against the user's tokens in serial order:
      // it holds the email token when the approval comes, and the phone's token after.
      await core.storage.db.transaction().execute(async (trx) => {
        await trx.updateTable("tokens").set((eb) => ({ failures: eb("failures", "+", 1) })).where("serial", "=", other).execute();
        const holder = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
        answered = device.answer(pending.json.challengeId, "approve", serial, device.passcode());
        const blocked = () => sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity where ${holder}::int = any(pg_blocking_pids(pid))`.execute(core.storage.db).then((r) => r.rows[0]!.waiting);
        await expect.poll(blocked, { timeout: 10_000 }).toBe(1);
        // Had the approval taken the phone's token first, this would wait for it while the
        // approval waits for this transaction: PostgreSQL would end one with a deadlock.
        await trx.updateTable("tokens").set((eb) => ({ failures: eb("failures", "+", 1) })).where("serial", "=", serial).execute();
      });
      expect((await answered!).json).toEqual({ status: "approved" });
      expect((await outcome(pushKey, pending.json.challengeId)).json).toEqual({ status: "accept", serial });
      // The success came after the failures: it reset them all.
      const failures = await core.storage.db.selectFrom("tokens").select(["serial", "failures"]).where("serial", "in", [serial, other]).orderBy("serial").execute();
      expect(failures.map((row) => Number(row.failures))).toEqual([0, 0]);
    });

  it("counts each push login the user denies against the source that asked, so a stranger spraying push requests from one place stops at its limit", async () => {
    const { device } = await enrolledUser("sprayed", true);
    const from = (source: string, passcode = "") => api.call("POST", "/api/v1/auth", pushKey, { userId: "sprayed", passcode, sourceAddress: source });
    // The source's limit: 30 failures in the window.
    for (let i = 0; i < 30; i++) {
      const pending = await from("203.0.113.77");
      expect(pending.json, `request ${i}`).toMatchObject({ result: "pending" });
      expect((await device.answer(pending.json.challengeId, "deny")).json).toEqual({ status: "denied" });
    }
    // That place is now refused, push or typed, without a look at the user's tokens.
    expect((await from("203.0.113.77")).json).toMatchObject({ result: "reject", reason: "rate_limited" });
    expect((await from("203.0.113.77", "123456")).json).toMatchObject({ result: "reject", reason: "rate_limited" });
    // The user is not: the denials were the stranger's, not the user's guesses.
    const elsewhere = await from("198.51.100.78");
    expect(elsewhere.json).toMatchObject({ result: "pending" });
    await api.call("DELETE", `/api/v1/auth/challenges/${elsewhere.json.challengeId}`, pushKey);
  });

  it("lets a user have three push sign-ins waiting at most, so a stranger cannot flood the phone", async () => {
    const { device } = await enrolledUser("xia", true);
    const opened = [];
    for (let i = 0; i < MAX_OPEN_CHALLENGES_PER_USER; i++) opened.push((await authenticate(pushKey, "xia")).json);
    expect(opened.map((answer) => answer.result)).toEqual(["pending", "pending", "pending"]);
    expect((await authenticate(pushKey, "xia")).json).toMatchObject({ result: "reject", reason: "rate_limited" });
    expect((await device.poll()).json.items).toHaveLength(MAX_OPEN_CHALLENGES_PER_USER);
    // One answered, one more may wait; once they expire, the user starts afresh.
    await device.answer(opened[0].challengeId, "deny");
    expect((await authenticate(pushKey, "xia")).json).toMatchObject({ result: "pending" });
    expect((await authenticate(pushKey, "xia")).json).toMatchObject({ result: "reject", reason: "rate_limited" });
    core.clock.advance(CHALLENGE_TTL_MS);
    expect((await authenticate(pushKey, "xia")).json).toMatchObject({ result: "pending" });
  });

  it("closes each expired challenge once when sweeps overlap (two nodes on PostgreSQL), with one audit record each", async () => {
    await enrolledUser("sweep", true);
    const user = await core.storage.db.selectFrom("users").select("id").where("user_id", "=", "sweep").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const application = await core.storage.db.selectFrom("applications").select("id").where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    await core.services.push.closeExpired();
    // Many challenges that expired at the same moment: the order of equal expiries is the same for every node.
    const now = core.clock.nowMs();
    const ids = Array.from({ length: 120 }, (_, i) => `chl_sweep${String(i).padStart(3, "0")}`);
    await core.storage.db
      .insertInto("challenges")
      .values(ids.map((id) => expiredChallengeRow({ id, virtualServerId: t.virtualServerId, applicationId: application.id, userPk: user.id, nowMs: now })))
      .execute();
    // SQLite serves one node (one process); there the sweeps of one node overlap.
    const node2 = kind === "postgres" ? await openSecondNode(core) : { services: core.services, close: async () => undefined };
    try {
      const closed = await Promise.all([core.services.push.closeExpired(), node2.services.push.closeExpired(), core.services.push.closeExpired(), node2.services.push.closeExpired()]);
      expect(closed.reduce((sum, n) => sum + n, 0)).toBe(ids.length);
    } finally {
      await node2.close();
    }
    const rows = await core.storage.db.selectFrom("challenges").select("status").where("id", "in", ids).execute();
    expect(rows.every((row) => row.status === "expired")).toBe(true);
    await core.services.audit.settle();
    const records = await core.storage.db.selectFrom("audit_log").select("details").where("action", "=", "auth.push_expired").execute();
    const perChallenge = new Map<string, number>();
    for (const record of records) {
      const id = (JSON.parse(record.details ?? "{}") as { challengeId?: string }).challengeId ?? "";
      if (ids.includes(id)) perChallenge.set(id, (perChallenge.get(id) ?? 0) + 1);
    }
    expect(perChallenge.size).toBe(ids.length);
    expect([...perChallenge.values()].every((count) => count === 1)).toBe(true);
  });

  it("keeps to three waiting sign-ins when push requests for one user arrive together on two nodes", async () => {
    await enrolledUser("yue", true);
    const application = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "portal").where("virtual_server_id", "=", t.virtualServerId).executeTakeFirstOrThrow();
    const node2 = await openSecondNode(core);
    try {
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? core.services.auth : node2.services.auth).authenticate({ application, userId: "yue", passcode: "", source: `198.51.100.${i + 1}`, method: "rest" })),
      );
      expect(results.filter((result) => result.result === "pending")).toHaveLength(MAX_OPEN_CHALLENGES_PER_USER);
      expect(results.filter((result) => result.result === "reject" && result.reason === "rate_limited")).toHaveLength(12 - MAX_OPEN_CHALLENGES_PER_USER);
    } finally {
      await node2.close();
    }
  });
});

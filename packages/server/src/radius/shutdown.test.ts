import { expect, it } from "vitest";
import { useTestApp, type TestApp } from "../http/testing-app.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { describeEachDatabase, type TestCore } from "../testing/databases.js";
import { enrollSimulatedUser } from "../testing/device.js";
import type { TestTenant } from "../testing/fixtures.js";
import { Attribute, Code } from "./attributes.js";
import { decodePacket, firstAttribute } from "./codec.js";
import { startTesseraRadius } from "./tessera.js";
import { accessRequest, createTestNas } from "./testing.js";

const SECRET = "a-long-shared-secret-for-the-vpn";

describeEachDatabase("RADIUS stopping while a login waits for the phone", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  // Every statement the core runs, so that a test can see none run after the server stopped.
  const statements: string[] = [];
  useTestApp(
    kind,
    "Stopping",
    async (setting) => {
      ({ core, api, t } = setting);
      await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 2 });
    },
    { log: (event) => void statements.push(event.query.sql) },
  );
  /**
   * The looks at push logins over a second and a half from now: a waiting request looks
   * every half second. (On PostgreSQL the audit trail's linking pass may run meanwhile.)
   */
  const looksOverTheNextMoment = async () => {
    const from = statements.length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    return statements.slice(from).filter((sql) => sql.includes('"challenges"'));
  };

  const open = async () => (await core.storage.db.selectFrom("challenges").select("id").where("status", "=", "pending").execute()).length;

  it("in challenge mode, ends the wait of a request that came back with the State, unanswered and unrecorded; the State stays good at another server", async () => {
    const { device, serial } = await enrollSimulatedUser(core, api, t.virtualServerId, "chad", { pushPermitted: true });
    await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "gateway", kind: "radius", pushOtp: true, pushMode: "challenge", pushTimeoutSeconds: 300, radiusAddresses: ["127.0.0.2"], radiusSecret: SECRET });
    const failures: string[] = [];
    const radius = await startTesseraRadius(core.services, { host: "127.0.0.1", port: 0, logger: { warn: () => undefined, error: (_fields: object, message: string) => void failures.push(message) } });
    const nas = await createTestNas(radius.address().port, "127.0.0.2");
    try {
      await nas.send(accessRequest({ secret: Buffer.from(SECRET), userName: "chad", password: "" }));
      const reply = decodePacket((await nas.nextReply(5_000))!);
      expect(reply.ok && reply.packet.code).toBe(Code.AccessChallenge);
      const state = reply.ok ? firstAttribute(reply.packet, Attribute.State)! : Buffer.alloc(0);
      const records = async () => {
        await core.services.audit.settle();
        return (await core.storage.db.selectFrom("audit_log").select("seq").where("action", "like", "auth.%").execute()).length;
      };
      const recorded = await records();
      // Stopped before its wait began: nothing decided, nothing recorded (not an unknown State).
      const application = await core.storage.db.selectFrom("applications").selectAll().where("name", "=", "gateway").executeTakeFirstOrThrow();
      const asked = { application, userId: "chad", source: "127.0.0.2", method: "radius" as const, client: { address: "127.0.0.2" }, challengeId: state.toString("utf8") };
      await expect(core.services.auth.redeemChallenge(asked, 60_000, AbortSignal.abort())).rejects.toMatchObject({ name: "AbortError" });
      expect(await records()).toBe(recorded);
      // The NAS comes back with the State and an empty password: the answer waits for the phone.
      await nas.send(accessRequest({ secret: Buffer.from(SECRET), userName: "chad", password: "", attributes: [{ type: Attribute.State, value: state }] }));
      await expect.poll(() => radius.stats().inFlight, { timeout: 5_000, interval: 20 }).toBe(1);
      await radius.close();
      expect(await looksOverTheNextMoment()).toEqual([]);
      expect(await nas.nextReply(200)).toBeNull();
      expect(await records()).toBe(recorded);
      expect(failures).toEqual([]);

      // The phone approves; the NAS's next try, at another server, gets in with the State.
      const challengeId = state.toString("utf8");
      expect((await device.answer(challengeId, "approve", serial, device.passcode())).json).toMatchObject({ status: "approved" });
      const other = await startTesseraRadius(core.services, { host: "127.0.0.1", port: 0 });
      const otherNas = await createTestNas(other.address().port, "127.0.0.2");
      try {
        await otherNas.send(accessRequest({ secret: Buffer.from(SECRET), userName: "chad", password: "", attributes: [{ type: Attribute.State, value: state }] }));
        const answer = decodePacket((await otherNas.nextReply(5_000))!);
        expect(answer.ok && answer.packet.code).toBe(Code.AccessAccept);
      } finally {
        await otherNas.close();
        await other.close();
      }
    } finally {
      await nas.close();
      await radius.close();
    }
  }, 30_000);

  it("in hold mode, ends the wait at once and the push login with it, finishes before close resolves, and leaves nothing running against the database", async () => {
    await enrollSimulatedUser(core, api, t.virtualServerId, "holly", { pushPermitted: true });
    // Hold mode (the default) with the longest wait there is.
    await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "vpn", kind: "radius", pushOtp: true, pushTimeoutSeconds: 300, radiusAddresses: ["127.0.0.1"], radiusSecret: SECRET });
    const failures: string[] = [];
    const logger = { warn: () => undefined, error: (_fields: object, message: string) => void failures.push(message) };
    const radius = await startTesseraRadius(core.services, { host: "127.0.0.1", port: 0, logger });
    const nas = await createTestNas(radius.address().port);
    try {
      await nas.send(accessRequest({ secret: Buffer.from(SECRET), userName: "holly", password: "" }));
      const before = await open();
      await expect.poll(open, { timeout: 5_000, interval: 50 }).toBe(before + 1);
      expect(radius.stats().inFlight).toBe(1);
      // A wait ended before its first look still looks once: the login is pending, not unknown.
      const { db } = core.storage;
      const challenge = await db.selectFrom("challenges").select("id").where("status", "=", "pending").orderBy("created_at", "desc").executeTakeFirstOrThrow();
      const application = await db.selectFrom("applications").selectAll().where("name", "=", "vpn").executeTakeFirstOrThrow();
      expect(await core.services.auth.challengeOutcome({ application, method: "radius", client: { address: "127.0.0.1" } }, challenge.id, 60_000, AbortSignal.abort())).toEqual({ status: "pending" });

      let settled = false;
      const closing = radius.close().then(() => (settled = true));
      // The wait would last five minutes; close ends it and then waits for the request's handler.
      await expect.poll(() => settled, { timeout: 5_000, interval: 50 }).toBe(true);
      await closing;
      // Not answered: the NAS asks again, another server or this one restarted, and that
      // opens another push login. This one leaves the phone, and the trail says why.
      expect(await nas.nextReply(200)).toBeNull();
      expect(await open()).toBe(before);
      await core.services.audit.settle();
      const cancelled = await core.storage.db.selectFrom("audit_log").select("reason").where("action", "=", "auth.push_cancelled").where("target_id", "=", "holly").execute();
      expect(cancelled).toEqual([{ reason: "the server that waited for the answer stopped; the sign-in is asked again" }]);
      // Nothing of the request's goes on looking at the database: a look every half
      // second would fail against a closed database and be logged.
      await core.storage.close();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(failures).toEqual([]);
    } finally {
      await nas.close();
      await radius.close();
    }
  }, 30_000);
});

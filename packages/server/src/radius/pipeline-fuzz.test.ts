import { totp } from "@tessera/otp";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { verifyAuditChain } from "../modules/audit/service.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { createTestCore, describeEachDatabase, snapshotTables, type TestCore } from "../testing/databases.js";
import { placeTokenInState } from "../testing/fixtures.js";
import { fuzzSeed, seededRandom, type Random } from "../testing/random.js";
import { Attribute, Code } from "./attributes.js";
import type { RadiusAttribute } from "./codec.js";
import { startTesseraRadius } from "./tessera.js";
import { accessRequest, createTestNas, eventually, malformedDatagrams, type TestNas } from "./testing.js";

// placeTokenInState gives tokens the key 0x01 x 20 (SHA1, 6 digits, 30 s).
const KEY = Buffer.alloc(20, 1);
const SECRET = Buffer.from("the-fuzzed-nas-shared-secret");

/**
 * The same generators as server-datagrams.test.ts, but against Tessera's whole RADIUS
 * server (client table, authentication service, limits, push, audit) on each database:
 * malformed datagrams change no row, and signed requests with odd contents (a State we
 * never gave, NUL and invalid UTF-8 in names, odd passwords, CHAP) are each answered
 * without an error.
 */
describeEachDatabase("RADIUS datagrams from a generator through the whole server", (kind) => {
  let core: TestCore;
  let radius: Awaited<ReturnType<typeof startTesseraRadius>>;
  let nas: TestNas;
  const seed = fuzzSeed();

  beforeAll(async () => {
    core = await createTestCore(kind);
    const vs = await core.services.virtualServers.create(installerPrincipal, { name: "Fuzzed" });
    for (const userId of ["alice", "bob"]) await placeTokenInState(core.services, vs.id, "active", { userId });
    // Push on, in challenge mode: an empty password opens a challenge, a State is redeemed.
    await core.services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: "vpn", kind: "radius", radiusAddresses: ["127.0.0.1"], radiusSecret: SECRET.toString(), pushOtp: true, pushMode: "challenge" });
    radius = await startTesseraRadius(core.services, { host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    await radius?.close();
    await core?.close();
  });

  /** Sends in small batches, each received before the next (the kernel drops a burst of a few hundred datagrams). */
  const sendAll = async (datagrams: Buffer[]) => {
    const before = radius.stats().requests;
    for (let sent = 0; sent < datagrams.length; ) {
      for (const end = Math.min(datagrams.length, sent + 20); sent < end; sent++) await nas.send(datagrams[sent]!);
      expect(await eventually(() => radius.stats().requests === before + sent, 5000), `seed ${seed}`).toBe(true);
    }
  };

  it("drops malformed, mutated and unsigned datagrams without an answer, and changes no row", async () => {
    nas = await createTestNas(radius.address().port);
    const random = seededRandom(seed);
    const valid = () => accessRequest({ secret: SECRET, userName: "alice", password: "000000", identifier: random.int(256) });
    const makers = malformedDatagrams(valid, random);
    const total = 2_000;
    await core.services.audit.settle();
    const before = await snapshotTables(core.storage.db as Kysely<unknown>);
    await sendAll(Array.from({ length: total }, (_, index) => makers[index % makers.length]!(index)));
    expect(await eventually(() => radius.stats().dropped === total, 5000), `seed ${seed}`).toBe(true);
    expect(await nas.nextReply(300)).toBeNull();
    expect(radius.stats(), `seed ${seed}`).toMatchObject({ requests: total, dropped: total, accepts: 0, rejects: 0, challenges: 0, errors: 0, inFlight: 0 });
    await core.services.audit.settle();
    expect(await snapshotTables(core.storage.db as Kysely<unknown>), `seed ${seed}`).toEqual(before);
  });

  it("answers signed requests with odd contents, each without an error, and still lets a good passcode in", async () => {
    nas = await createTestNas(radius.address().port);
    const random = seededRandom(seed + 1);
    const oddText = (r: Random): Buffer =>
      r.pick([
        () => Buffer.from("alice\0admin"),
        () => Buffer.from([0xff, 0xfe, 0x61, 0xc3]),
        () => Buffer.alloc(253, 0x61),
        () => Buffer.from("👩‍💻", "utf8"),
        () => r.bytes(1 + r.int(40)),
        () => Buffer.from("alice"),
      ])();
    const odd = (index: number): Buffer => {
      const attributes: RadiusAttribute[] = [{ type: Attribute.UserName, value: oddText(random) }];
      if (random.int(3) === 0) attributes.push({ type: Attribute.State, value: random.int(2) ? random.bytes(1 + random.int(60)) : Buffer.from(`chl_${random.int(1e9)}\0`) });
      if (random.int(3) === 0) attributes.push({ type: Attribute.CallingStationId, value: oddText(random) });
      if (random.int(3) === 0) attributes.push({ type: Attribute.ChapPassword, value: random.bytes(17) });
      const password = random.pick(["", "x", "\0", "0".repeat(6), "🙂", "a".repeat(128), random.bytes(16).toString("latin1")]);
      return accessRequest({ secret: SECRET, password: random.int(6) === 0 ? undefined : password, identifier: index % 256, attributes });
    };
    const total = 300;
    const answered = nas.replies.length;
    await sendAll(Array.from({ length: total }, (_, index) => odd(index)));
    // Every one answered: nothing here is malformed (a password of 128 octets is allowed).
    expect(await eventually(() => nas.replies.length - answered === total, 10_000), `seed ${seed}: ${nas.replies.length - answered} of ${total} answered`).toBe(true);
    expect(radius.stats(), `seed ${seed}`).toMatchObject({ errors: 0, inFlight: 0 });
    for (const reply of nas.replies.slice(answered)) expect([Code.AccessReject, Code.AccessChallenge]).toContain(reply[0]);

    // The trail is whole, and a good passcode from another place gets in.
    await core.services.audit.settle();
    const reasons = await core.storage.db.selectFrom("audit_log").select(["reason", (eb) => eb.fn.countAll<number>().as("count")]).where("action", "=", "auth.reject").groupBy("reason").execute();
    console.info(`RADIUS odd requests [${kind}] seed ${seed}: ${reasons.map((row) => `${row.reason} ${row.count}`).join(", ")}`);
    // The paths these requests take: the passcode check and its limits, push, a State redeemed, CHAP refused.
    expect(reasons.map((row) => row.reason)).toEqual(expect.arrayContaining(["rate_limited", "unknown_challenge", "not_pap"]));
    expect(await verifyAuditChain(core.storage.db)).toMatchObject({ ok: true });
    core.clock.advance(30_000);
    const passcode = totp(KEY, { atMs: core.clock.nowMs(), periodSeconds: 30, digits: 6, algorithm: "SHA1" });
    const good = accessRequest({ secret: SECRET, userName: "bob", password: passcode, identifier: 77, attributes: [{ type: Attribute.CallingStationId, value: Buffer.from("198.51.100.200") }] });
    await nas.send(good);
    expect(await eventually(() => nas.replies.length > answered + total, 5000)).toBe(true);
    expect(nas.replies.at(-1)?.[0], `seed ${seed}`).toBe(Code.AccessAccept);
  });
});

import { hotp, totp } from "@tessera/otp";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useTestApp, type TestApp } from "../../http/testing-app.js";
import { openStorage } from "../../storage/database.js";
import { writeBatcherFor } from "../../storage/write-batch.js";
import { createTestCore, describeEachDatabase, openSecondNode, type TestCore } from "../../testing/databases.js";
import { createTenant, placeTokenInState, type TestTenant } from "../../testing/fixtures.js";
import { auditFields, prepareAuditedUpdate, verifyAuditChain } from "../audit/service.js";
import { installerPrincipal } from "../operators/access.js";
import { databaseGuessingLimits, endedWindowSweeper, memoryGuessingLimits, sourceLimitKey, type GuessingLimits, type TakeParams } from "./limits.js";
import { asksForPush, createAuthService, preparePasscodeQueries, type AuthRequest } from "./service.js";

// placeTokenInState gives tokens the key 0x01 x 20 (SHA1, 6 digits, 30 s).
const KEY = Buffer.alloc(20, 1);

describeEachDatabase("passcode authentication", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  let application: AuthRequest["application"];
  let apiKey: string;
  useTestApp(kind, "Auth", async (setting) => {
    ({ core, api, t } = setting);
    const created = await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "portal", kind: "rest" });
    apiKey = created.apiKey!;
    application = await core.storage.db.selectFrom("applications").selectAll().where("id", "=", created.id).executeTakeFirstOrThrow();
  });

  const code = (offsetSteps = 0) => totp(KEY, { atMs: core.clock.nowMs(), periodSeconds: 30, digits: 6, algorithm: "SHA1", stepOffset: offsetSteps });
  const login = (userId: string, passcode: string, source = "192.0.2.10") => core.services.auth.authenticate({ application, userId, passcode, source, method: "rest" });
  const tokenRow = (serial: string) => core.storage.db.selectFrom("tokens").selectAll().where("serial", "=", serial).executeTakeFirstOrThrow();

  it("accepts a good TOTP once and refuses it a second time", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "once" });
    core.clock.advance(30_000);
    const passcode = code();
    expect(await login("once", passcode)).toMatchObject({ result: "accept", serial });
    expect(await login("once", passcode)).toMatchObject({ result: "reject", reason: "replayed" });
    core.clock.advance(30_000);
    expect(await login("once", code())).toMatchObject({ result: "accept" });
  });

  it("reads a passcode typed as the app shows it, in groups, or copied with a line end, as its digits; the same digits are then a replay", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "grouped" });
    core.clock.advance(30_000);
    const passcode = code();
    expect(await login("grouped", `${passcode.slice(0, 3)} ${passcode.slice(3)}`)).toMatchObject({ result: "accept", serial });
    expect(await login("grouped", passcode)).toMatchObject({ result: "reject", reason: "replayed" });
    core.clock.advance(30_000);
    expect(await login("grouped", ` ${code()}\r\n`)).toMatchObject({ result: "accept", serial });
    core.clock.advance(30_000);
    // Over RADIUS too (PAP), and no failure was counted on the way.
    expect(await core.services.auth.authenticate({ application, userId: "grouped", passcode: `${code().slice(0, 3)}\u00a0${code().slice(3)}`, source: "192.0.2.10", method: "radius" })).toMatchObject({ result: "accept" });
    expect((await tokenRow(serial)).failures).toBe(0);
    // Whitespace alone is an empty passcode: it asks for push, as "" does.
    expect(asksForPush("  ")).toBe(true);
    expect(asksForPush(" 1 ")).toBe(true);
    expect(asksForPush("12")).toBe(false);
  });

  it("accepts a passcode one step off and learns the drift", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "drifty" });
    core.clock.advance(30_000);
    expect(await login("drifty", code(-1))).toMatchObject({ result: "accept" });
    expect((await tokenRow(serial)).drift_steps).toBe(-1);
    expect(await login("drifty", code(5))).toMatchObject({ result: "reject", reason: "wrong" });
  });

  it("lets exactly one of two simultaneous checks of the same passcode through", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "racer" });
    core.clock.advance(30_000);
    const passcode = code();
    const results = await Promise.all([login("racer", passcode), login("racer", passcode), login("racer", passcode)]);
    expect(results.filter((r) => r.result === "accept")).toHaveLength(1);
  });

  it("lets exactly one through when two nodes check the same passcode at once (their own connections and group commits)", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-nodes" });
    core.clock.advance(30_000);
    const passcode = code();
    // A second node: its own services, connection(s) and group commit over the same
    // database. On PostgreSQL checks on both nodes read the token before either writes,
    // so the compare-and-set on the stored step is what keeps a second one from accepting.
    const node2 = await openSecondNode(core);
    try {
      const attempts = Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? login : (userId: string, passcode: string) => node2.services.auth.authenticate({ application, userId, passcode, source: "192.0.2.10", method: "rest" }))("two-nodes", passcode));
      const results = await Promise.all(attempts);
      expect(results.filter((r) => r.result === "accept")).toHaveLength(1);
      // The others are replays; past the lock threshold (3) they have locked the token.
      const reasons = results.filter((r) => r.result === "reject").map((r) => (r.result === "reject" ? r.reason : ""));
      expect(reasons).toHaveLength(5);
      expect(reasons.every((reason) => reason === "replayed" || reason === "locked")).toBe(true);
      expect(reasons.filter((reason) => reason === "replayed").length).toBeGreaterThanOrEqual(3);
      expect((await verifyAuditChain(core.storage.db)).ok).toBe(true);
    } finally {
      await node2.close();
    }
  });

  it("stores an accepted step or counter only over the one it was checked against (compare-and-set)", async () => {
    // Two checks on stale reads of one token, as two nodes without the audit lock between
    // them would make: the second write finds the token moved on and changes nothing.
    const totpSerial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "cas-totp" });
    const queries = preparePasscodeQueries(core.storage.db);
    const now = core.clock.nowMs();
    const store = (step: number) => core.storage.db.executeQuery(queries.storeTotp({ serial: totpSerial, step, driftSteps: 0, now }));
    expect(Number((await store(1000)).numAffectedRows)).toBe(1);
    expect(Number((await store(1000)).numAffectedRows)).toBe(0);
    expect(Number((await store(999)).numAffectedRows)).toBe(0);
    expect(Number((await store(1001)).numAffectedRows)).toBe(1);
    expect((await tokenRow(totpSerial)).last_totp_step).toBe(1001);

    const hotpSerial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "cas-hotp" });
    await core.storage.db.updateTable("tokens").set({ otp_mode: "hotp", hotp_counter: 5 }).where("serial", "=", hotpSerial).execute();
    const storeHotp = (counter: number) => core.storage.db.executeQuery(queries.storeHotp({ serial: hotpSerial, counter, nextCounter: counter + 1, now }));
    expect(Number((await storeHotp(5)).numAffectedRows)).toBe(1);
    expect(Number((await storeHotp(5)).numAffectedRows)).toBe(0);
    expect((await tokenRow(hotpSerial)).hotp_counter).toBe(6);
  });

  it("locks the token at the threshold of failures, refuses the right passcode then, and an operator's unlock lets it in", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "locky" });
    core.clock.advance(30_000);
    const wrong = code() === "000000" ? "111111" : "000000";
    for (let i = 0; i < 3; i++) expect((await login("locky", wrong, "198.51.100.1")).result).toBe("reject");
    expect(await tokenRow(serial)).toMatchObject({ state: "locked", failures: 3 });
    expect(await login("locky", code(), "198.51.100.1")).toMatchObject({ result: "reject", reason: "locked" });
    await core.services.tokenLifecycle.unlock(t.principals.helpdesk, serial, "called the helpdesk");
    expect(await login("locky", code(), "198.51.100.1")).toMatchObject({ result: "accept" });
  });

  it("locks the token at the threshold when wrong guesses arrive together on two nodes, each guess counted once", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "swarm" });
    core.clock.advance(30_000);
    const wrong = code() === "000000" ? "111111" : "000000";
    // On PostgreSQL these run on connections of their own and all read the count as 0
    // before any writes: a count written as read plus one would end at 1, unlocked.
    const node2 = await openSecondNode(core);
    try {
      const guesses = Array.from({ length: 8 }, (_, i) =>
        i % 2 === 0 ? login("swarm", wrong, `198.51.100.${100 + i}`) : node2.services.auth.authenticate({ application, userId: "swarm", passcode: wrong, source: `198.51.100.${100 + i}`, method: "rest" }),
      );
      const results = await Promise.all(guesses);
      expect(results.every((result) => result.result === "reject")).toBe(true);
      expect(await tokenRow(serial)).toMatchObject({ state: "locked", failures: 3 });
      await core.services.audit.settle();
      const locks = await core.storage.db.selectFrom("audit_log").select("seq").where("action", "=", "token.lock").where("token_serial", "=", serial).execute();
      expect(locks).toHaveLength(1);
    } finally {
      await node2.close();
    }
  });

  it("unlocks a locked token by itself once the lock duration has passed", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "waits" });
    await core.storage.db.updateTable("tokens").set({ state: "locked", failures: 3, locked_until: core.clock.nowMs() + 900_000 }).where("serial", "=", serial).execute();
    core.clock.advance(30_000);
    expect(await login("waits", code())).toMatchObject({ reason: "locked" });
    core.clock.advance(900_000);
    expect(await login("waits", code())).toMatchObject({ result: "accept" });
    expect(await tokenRow(serial)).toMatchObject({ state: "active", failures: 0, locked_until: null });
  });

  it("locks only on failures in a row: a success on one of a user's tokens starts every one afresh, and so does reactivation", async () => {
    const first = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-tokens" });
    const second = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-tokens" });
    const wrong = () => (code() === "000000" ? "111111" : "000000");
    core.clock.advance(30_000);
    for (let i = 0; i < 2; i++) expect(await login("two-tokens", wrong())).toMatchObject({ reason: "wrong" });
    // Both keys are the same here: the first token in serial order answers.
    expect(await login("two-tokens", code())).toMatchObject({ result: "accept", serial: first });
    expect(await tokenRow(second)).toMatchObject({ state: "active", failures: 0 });
    // A week later, one typo: one failure, not the third in a row.
    core.clock.advance(7 * 86_400_000);
    expect(await login("two-tokens", wrong())).toMatchObject({ reason: "wrong" });
    expect(await tokenRow(second)).toMatchObject({ state: "active", failures: 1 });

    // Locked, suspended while locked, reactivated: back with no failures and no lock.
    for (let i = 0; i < 2; i++) expect(await login("two-tokens", wrong())).toMatchObject({ reason: "wrong" });
    expect(await tokenRow(second)).toMatchObject({ state: "locked", failures: 3 });
    await core.services.tokenLifecycle.suspend(installerPrincipal, second);
    await core.services.tokenLifecycle.reactivate(installerPrincipal, second);
    expect(await tokenRow(second)).toMatchObject({ state: "active", failures: 0, locked_until: null });
  });

  it("never lets a suspended, assigned, lost or inventory token in", async () => {
    for (const state of ["suspended", "assigned"] as const) {
      await placeTokenInState(core.services, t.virtualServerId, state, { userId: `holder-${state}` });
      core.clock.advance(30_000);
      expect(await login(`holder-${state}`, code())).toMatchObject({ result: "reject", reason: "no_token" });
    }
    const lost = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "loser" });
    await core.services.tokenLifecycle.revoke(t.principals.operator, lost, { to: "lost", reason: "stolen" });
    expect(await login("loser", code())).toMatchObject({ result: "reject", reason: "no_token" });
    // Back on the shelf: in inventory it belongs to nobody, and its old holder is refused.
    const returned = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "returner" });
    await core.services.tokenLifecycle.revoke(t.principals.operator, returned, { to: "inventory", reason: "left the company" });
    expect(await tokenRow(returned)).toMatchObject({ state: "inventory", user_pk: null });
    expect(await login("returner", code())).toMatchObject({ result: "reject", reason: "no_token" });
    expect(await login("nobody-here", code())).toMatchObject({ result: "reject", reason: "user_unknown" });
  });

  it("checks HOTP tokens with a look-ahead and never accepts a counter twice", async () => {
    const seed = Buffer.from("12345678901234567890");
    await core.services.tokens.importSeeds(installerPrincipal, { virtualServerId: t.virtualServerId, seeds: [{ serial: `HOTP-${kind}`, secret: seed, otpMode: "hotp", digits: 6, periodSeconds: 30, algorithm: "SHA1", counter: 0 }] });
    await core.services.users.create(installerPrincipal, t.virtualServerId, { userId: "hotpuser", firstName: "", lastName: "", email: "", groups: [] });
    const user = await core.storage.db.selectFrom("users").select("id").where("user_id", "=", "hotpuser").executeTakeFirstOrThrow();
    await core.storage.db.updateTable("tokens").set({ state: "active", user_pk: user.id }).where("serial", "=", `HOTP-${kind}`).execute();
    // RFC 4226 Appendix D: counter 3 is 969429; the device was pressed three times unused.
    expect(hotp(seed, { counter: 3, digits: 6, algorithm: "SHA1" })).toBe("969429");
    expect(await login("hotpuser", "969429")).toMatchObject({ result: "accept" });
    expect(await login("hotpuser", "969429")).toMatchObject({ result: "reject" });
    expect(await login("hotpuser", "338314")).toMatchObject({ result: "accept" });
    expect((await tokenRow(`HOTP-${kind}`)).hotp_counter).toBe(5);
  });

  it("lets any of a user's active tokens answer", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-tokens" });
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-tokens" });
    core.clock.advance(30_000);
    expect(await login("two-tokens", code())).toMatchObject({ result: "accept" });
  });

  it("stops a guessing source without locking the tokens of the users it tries", async () => {
    const serials: string[] = [];
    for (let i = 0; i < 12; i++) serials.push(await placeTokenInState(core.services, t.virtualServerId, "active", { userId: `victim-${i}` }));
    core.clock.advance(30_000);
    // 30 failures from one address: two per user over fifteen users would lock nobody,
    // and the limit then refuses the address without touching tokens.
    let limited = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 12; i++) {
        const result = await login(`victim-${i}`, "000001", "203.0.113.66");
        if (result.result === "reject" && result.reason === "rate_limited") limited += 1;
      }
    }
    // 48 attempts: the first 30 count (users 0-5 reach three failures and lock), the other 18 are refused untouched.
    expect(limited).toBe(18);
    const locked = (await Promise.all(serials.map(tokenRow))).filter((row) => row.state === "locked");
    expect(locked.map((row) => row.serial)).toEqual(serials.slice(0, 6));
    // The users still get in from their own addresses.
    const free = serials.findIndex((_, i) => !locked.some((row) => row.serial === serials[i]));
    expect(await login(`victim-${free}`, code(), "192.0.2.200")).toMatchObject({ result: "accept" });
  });

  it(kind === "postgres" ? "counts a user's failures on every node together, and forgets them when the window ends or the user gets in" : "forgets a user's failures when the user gets in", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "spread" });
    // Locking is not what this is about: the token takes a hundred failures.
    await core.storage.db.updateTable("tokens").set({ failures: -100 }).where("serial", "=", serial).execute();
    core.clock.advance(30_000);
    const node2 = await openSecondNode(core);
    try {
      const onNode = (node: number, passcode: string, source: string) =>
        (node === 1 ? core.services : node2.services).auth.authenticate({ application, userId: "spread", passcode, source, method: "rest" });
      const wrong = code() === "000000" ? "111111" : "000000";
      // Ten failures, five on each node, each from its own address: the user's limit.
      for (let i = 0; i < 10; i++) expect(await onNode(1 + (i % 2), wrong, `198.51.100.${i + 1}`)).toMatchObject({ result: "reject", reason: "wrong" });
      if (kind === "postgres") {
        expect(await onNode(1, code(), "198.51.100.99")).toMatchObject({ result: "reject", reason: "rate_limited" });
        expect(await onNode(2, code(), "198.51.100.99")).toMatchObject({ result: "reject", reason: "rate_limited" });
        // Ten minutes on, the window has ended everywhere.
        core.clock.advance(10 * 60_000);
        for (let i = 0; i < 9; i++) await onNode(1 + (i % 2), wrong, "198.51.100.50");
        expect(await core.storage.db.selectFrom("auth_failures").select(["key", "failures"]).where("key", "like", "user:%").execute()).toEqual([{ key: `user:${t.virtualServerId}:spread`, failures: 9 }]);
      }
      // One good passcode and the user starts from nothing again: on PostgreSQL on every
      // node, whichever the user got in through; on SQLite (one server) in its memory.
      expect(await onNode(kind === "postgres" ? 2 : 1, code(), "198.51.100.77")).toMatchObject({ result: "accept" });
      await core.storage.db.updateTable("tokens").set({ failures: -100 }).where("serial", "=", serial).execute();
      for (let i = 0; i < 9; i++) expect(await onNode(1, wrong, "198.51.100.51")).toMatchObject({ reason: "wrong" });
    } finally {
      await node2.close();
    }
  });

  // PostgreSQL only: SQLite groups passcode checks into shared transactions instead.
  if (kind === "postgres")
    it("takes a right passcode on PostgreSQL in two statements and no transaction, and a wrong one in a transaction", async () => {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "two-trips" });
      core.clock.advance(30_000);
      const statements: string[] = [];
      const texts: string[] = [];
      const storage = openStorage(core.database.target, {
        log: (event) => {
          statements.push(event.query.sql.trim().split(/\s+/)[0]!.toLowerCase());
          texts.push(event.query.sql);
        },
      });
      try {
        const auth = createAuthService({ db: storage.db, kind: storage.kind, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring });
        const attempt = (passcode: string) => auth.authenticate({ application, userId: "two-trips", passcode, source: "192.0.2.41", method: "rest" });
        expect(await attempt(code())).toMatchObject({ result: "accept", serial });
        // The user's attempt taken with the user's tokens and the counts read, and the
        // compare-and-set with the audit record and the delete of the user's count.
        expect(statements).toEqual(["with", "with"]);
        expect(texts[0]).toMatch(/insert into "auth_failures"/);
        expect(texts[1]).toMatch(/delete from "auth_failures"/);
        statements.length = 0;
        core.clock.advance(30_000);
        expect(await attempt(code() === "000000" ? "111111" : "000000")).toMatchObject({ result: "reject", reason: "wrong" });
        expect(statements[0]).toBe("with");
        expect(statements).toContain("begin");
        expect(statements.at(-1)).toBe("commit");
      } finally {
        await storage.close();
      }
      await core.services.audit.settle();
      const trail = await core.storage.db.selectFrom("audit_log").select(["action", "token_serial", "details"]).where("target_id", "in", [serial, "two-trips"]).where("action", "like", "auth.%").orderBy("seq").execute();
      expect(trail.map((row) => [row.action, row.token_serial])).toEqual([
        ["auth.accept", serial],
        ["auth.reject", null],
      ]);
      expect(JSON.parse(trail[0]!.details!)).toMatchObject({ method: "rest", userId: "two-trips", source: "192.0.2.41", push: false });
      expect(await verifyAuditChain(core.storage.db)).toMatchObject({ ok: true });
    });

  if (kind === "postgres")
    it("lets in a user whose passcode was accepted on PostgreSQL even when the reset of their other tokens' failures then fails", async () => {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "half-reset" });
      const other = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "half-reset" });
      await core.storage.db.updateTable("tokens").set({ failures: 2 }).where("serial", "=", other).execute();
      // The other token's row refuses the reset, as a database that went away would.
      await sql`create function refuse_reset() returns trigger language plpgsql as $$ begin raise exception 'the database went away'; end $$`.execute(core.storage.db);
      await sql`create trigger refuse_reset before update on tokens for each row when (old.serial = ${sql.lit(other)} and new.failures = 0) execute function refuse_reset()`.execute(core.storage.db);
      try {
        const failures: string[] = [];
        const auth = createAuthService({ db: core.storage.db, kind: core.storage.kind, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring, onFollowUpFailure: (what, error) => failures.push(`${what}: ${(error as Error).message}`) });
        core.clock.advance(30_000);
        expect(await auth.authenticate({ application, userId: "half-reset", passcode: code(), source: "192.0.2.42", method: "rest" })).toMatchObject({ result: "accept", serial });
        expect(failures).toEqual([expect.stringMatching(/other tokens.*the database went away/)]);
        expect((await tokenRow(other)).failures).toBe(2);
        await core.services.audit.settle();
        const accepted = await core.storage.db.selectFrom("audit_log").select("action").where("token_serial", "=", serial).where("action", "like", "auth.%").execute();
        expect(accepted).toEqual([{ action: "auth.accept" }]);
      } finally {
        await sql`drop trigger refuse_reset on tokens`.execute(core.storage.db);
        await sql`drop function refuse_reset()`.execute(core.storage.db);
      }
    });

  if (kind === "postgres")
    it("resets the other tokens' failures after a PostgreSQL fast accept in serial order, whatever plan reads them, so a wrong passcode at the same user cannot deadlock with it", async () => {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "ordered-reset" });
      const first = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "ordered-reset" });
      const second = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "ordered-reset" });
      expect([serial, first, second]).toEqual([serial, first, second].sort());
      // Written last, the first one's row comes after the second's in the table: a plan
      // that reads the table in its own order meets the second one first.
      await core.storage.db.updateTable("tokens").set({ failures: 2 }).where("serial", "=", second).execute();
      await core.storage.db.updateTable("tokens").set({ failures: 2 }).where("serial", "=", first).execute();
      // A node whose PostgreSQL reads tables in their order, not by index (as it may when
      // its statistics say a user has many tokens).
      const url = new URL((core.database.target as { url: string }).url);
      url.searchParams.set("options", "-c enable_indexscan=off -c enable_bitmapscan=off -c enable_indexonlyscan=off");
      const storage = openStorage({ kind: "postgres", url: url.toString() });
      try {
        const plan = (await sql<{ "QUERY PLAN": string }>`explain select serial from tokens where user_pk = (select user_pk from tokens where serial = ${first}) and failures > 0`.execute(storage.db)).rows.map((row) => row["QUERY PLAN"]).join("\n");
        expect(plan).toMatch(/Seq Scan on tokens/);
        const followUps: string[] = [];
        const auth = createAuthService({ db: storage.db, kind: storage.kind, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring, onFollowUpFailure: (what, error) => followUps.push(`${what}: ${(error as Error).message}`) });
        core.clock.advance(30_000);
        let accepted: ReturnType<typeof auth.authenticate> | undefined;
        // A wrong passcode's transaction counts against the user's tokens in serial order:
        // it holds the first other token as the accept comes, and wants the second after.
        await core.storage.db.transaction().execute(async (trx) => {
          await trx.updateTable("tokens").set((eb) => ({ failures: eb("failures", "+", 1) })).where("serial", "=", first).execute();
          const holder = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
          accepted = auth.authenticate({ application, userId: "ordered-reset", passcode: code(), source: "192.0.2.43", method: "rest" });
          const blocked = () => sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity where ${holder}::int = any(pg_blocking_pids(pid))`.execute(core.storage.db).then((r) => r.rows[0]!.waiting);
          await expect.poll(blocked, { timeout: 10_000 }).toBe(1);
          // Had the reset taken the second token first, this would wait for it while the
          // reset waits for this transaction: PostgreSQL would end one with a deadlock.
          await trx.updateTable("tokens").set((eb) => ({ failures: eb("failures", "+", 1) })).where("serial", "=", second).execute();
        });
        expect(await accepted!).toMatchObject({ result: "accept", serial });
        expect(followUps).toEqual([]);
        // The success came after the failures: it reset them all.
        expect([(await tokenRow(first)).failures, (await tokenRow(second)).failures]).toEqual([0, 0]);
      } finally {
        await storage.close();
      }
    });

  it("fails a login whole when its failure count cannot be stored: no token failure, no audit record", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "uncounted" });
    core.clock.advance(30_000);
    const broken = async () => {
      throw new Error("the database is gone");
    };
    const auth = createAuthService({
      db: core.storage.db,
      kind: core.storage.kind,
      clock: core.clock,
      audit: core.services.audit,
      keyring: core.services.keyring,
      limits: { check: async () => ({ over: false }), take: async () => ({ over: false }), failed: broken, succeeded: broken, countFailure: broken },
    });
    const attempt = (passcode: string) => auth.authenticate({ application, userId: "uncounted", passcode, source: "192.0.2.40", method: "radius" });
    const trail = async () => {
      await core.services.audit.settle();
      return core.storage.db.selectFrom("audit_log").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    };
    const before = await trail();
    await expect(attempt(code() === "000000" ? "111111" : "000000")).rejects.toThrow("the database is gone");
    await expect(attempt(code())).rejects.toThrow("the database is gone");
    expect(await trail()).toEqual(before);
    expect(await tokenRow(serial)).toMatchObject({ failures: 0, last_totp_step: null });
    // Counted, the same passcode then gets in: the failed attempt stored nothing.
    expect(await login("uncounted", code())).toMatchObject({ result: "accept", serial });
  });

  it("stops a burst of guesses that arrive together at the limits, as if they had come one by one", async () => {
    const serials: string[] = [];
    for (let i = 0; i < 60; i++) serials.push(await placeTokenInState(core.services, t.virtualServerId, "active", { userId: `burst-${i}` }));
    core.clock.advance(30_000);
    const wrong = code() === "000000" ? "111111" : "000000";
    // Sixty users, one wrong guess each, all at once from one address (limit 30).
    const fromOne = await Promise.all(serials.map((_, i) => login(`burst-${i}`, wrong, "203.0.113.90")));
    const checked = fromOne.filter((r) => r.result === "reject" && r.reason === "wrong").length;
    const limited = fromOne.filter((r) => r.result === "reject" && r.reason === "rate_limited").length;
    expect(checked + limited).toBe(60);
    // On SQLite the logins of a group commit run in turn: exactly the limit. On
    // PostgreSQL a burst passes it by at most the transactions running at once (the
    // pool's ten connections; each sees the failures committed before it began).
    if (kind === "sqlite") {
      expect(checked).toBe(30);
    } else {
      expect(checked).toBeGreaterThanOrEqual(30);
      expect(checked).toBeLessThan(40);
    }
    const failed = (await Promise.all(serials.map(tokenRow))).filter((row) => row.failures === 1);
    expect(failed).toHaveLength(checked);
    // Twenty guesses at one user from twenty addresses (user limit 10): the token locks
    // at three failures, seven more are refused as locked, and on SQLite the last ten
    // are refused by the limit without a look at the token.
    const victim = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "burst-user" });
    const atOne = await Promise.all(Array.from({ length: 20 }, (_, i) => login("burst-user", wrong, `198.51.100.${100 + i}`)));
    const reasons = atOne.map((r) => (r.result === "reject" ? r.reason : r.result));
    if (kind === "sqlite") expect(reasons).toEqual([...Array(3).fill("wrong"), ...Array(7).fill("locked"), ...Array(10).fill("rate_limited")]);
    expect(await tokenRow(victim)).toMatchObject({ state: "locked" });
    expect((await verifyAuditChain(core.storage.db)).ok).toBe(true);
  });

  it(kind === "postgres" ? "stops guesses at one user sent all at once on two nodes at the user's limit, none checked past it" : "stops guesses at one user sent all at once at the user's limit, none checked past it", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "swarmed" });
    // Locking is not what this is about: the token takes a hundred failures.
    await core.storage.db.updateTable("tokens").set({ failures: -100 }).where("serial", "=", serial).execute();
    core.clock.advance(30_000);
    const wrong = code() === "000000" ? "111111" : "000000";
    // SQLite has one server, which counts in its memory; PostgreSQL every node together.
    const node2 = kind === "postgres" ? await openSecondNode(core) : null;
    try {
      // Thirty guesses from thirty addresses (on PostgreSQL half on each node): each takes
      // its attempt from the user's limit (ten) before its passcode is checked, so exactly
      // ten are.
      const outcomes = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 === 0 || !node2 ? core.services : node2.services).auth.authenticate({ application, userId: "swarmed", passcode: wrong, source: `198.51.100.${150 + i}`, method: "radius" })),
      );
      const reasons = outcomes.map((o) => (o.result === "reject" ? o.reason : o.result));
      expect(reasons.filter((reason) => reason === "wrong")).toHaveLength(10);
      expect(reasons.filter((reason) => reason === "rate_limited")).toHaveLength(20);
      expect(await tokenRow(serial)).toMatchObject({ failures: -90 });
      // The right passcode now is refused unchecked too: nothing was stored.
      expect(await login("swarmed", code(), "192.0.2.201")).toMatchObject({ result: "reject", reason: "rate_limited" });
      expect(await tokenRow(serial)).toMatchObject({ last_totp_step: null });
      // The refused guesses are in the user's trail, where an operator looks for them.
      await core.services.audit.settle();
      const userPk = (await core.storage.db.selectFrom("users").select("id").where("user_id", "=", "swarmed").executeTakeFirstOrThrow()).id;
      const refusals = await core.storage.db.selectFrom("audit_log").select(["user_pk", "token_serial"]).where("action", "=", "auth.reject").where("reason", "=", "rate_limited").where("target_id", "=", "swarmed").execute();
      expect(refusals).toHaveLength(21);
      expect(refusals.every((row) => row.user_pk === userPk && row.token_serial === null)).toBe(true);
    } finally {
      await node2?.close();
    }
  });

  it("does not let a source past its limit spend the limit of the users it names", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "named" });
    core.clock.advance(30_000);
    // Thirty failures from one address (its limit), then ten more attempts from it at one user.
    for (let i = 0; i < 30; i++) expect(await login(`nobody-${i}`, "000000", "203.0.113.5")).toMatchObject({ reason: "user_unknown" });
    for (let i = 0; i < 10; i++) expect(await login("named", code(), "203.0.113.5")).toMatchObject({ reason: "rate_limited" });
    // The user, from elsewhere, still gets in: none of those counted against them.
    expect(await login("named", code(), "192.0.2.9")).toMatchObject({ result: "accept", serial });
  });

  it("undoes the counts of a group commit that rolled back, so its logins count once when they run again", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "rolled-back" });
    await core.storage.db.updateTable("tokens").set({ failures: -100 }).where("user_pk", "in", core.storage.db.selectFrom("users").select("id").where("user_id", "=", "rolled-back")).execute();
    core.clock.advance(30_000);
    const memory = memoryGuessingLimits({ sourceFailures: 30, userFailures: 10, windowSeconds: 600 }, core.clock);
    // A login that meets a database error in the middle of a group (here: its limits cannot be read).
    const limits: GuessingLimits = {
      ...memory,
      take: async (tx, source, userKey) => {
        if (userKey.endsWith(":boom")) throw new Error("the database said no");
        return memory.take(tx, source, userKey);
      },
    };
    const auth = createAuthService({ db: core.storage.db, kind: core.storage.kind, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring, limits });
    const attempt = (userId: string, source: string) => auth.authenticate({ application, userId, passcode: code() === "000000" ? "111111" : "000000", source, method: "rest" });
    const outcomes = await Promise.allSettled([...Array.from({ length: 5 }, (_, i) => attempt("rolled-back", `192.0.2.${70 + i}`)), attempt("boom", "192.0.2.99")]);
    expect(outcomes.map((o) => (o.status === "fulfilled" ? (o.value.result === "reject" ? o.value.reason : o.value.result) : "error"))).toEqual(["wrong", "wrong", "wrong", "wrong", "wrong", "error"]);
    // Each counted once: five more attempts reach the user's limit (ten), the next is refused.
    const more = [];
    for (let i = 0; i < 6; i++) more.push(await attempt("rolled-back", `192.0.2.${80 + i}`));
    expect(more.map((o) => (o.result === "reject" ? o.reason : o.result))).toEqual([...Array(5).fill("wrong"), "rate_limited"]);
  });

  it("counts the push logins a fraud report denies against their sources in one order, whatever order they come in, so two reports at once cannot deadlock on PostgreSQL", async () => {
    const memory = memoryGuessingLimits({ sourceFailures: 30, userFailures: 10, windowSeconds: 600 }, core.clock);
    const counted: string[] = [];
    const limits: GuessingLimits = {
      ...memory,
      failed: async (tx, source) => {
        counted.push(source);
        return memory.failed(tx, source);
      },
    };
    const auth = createAuthService({ db: core.storage.db, kind: core.storage.kind, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring, limits });
    const vs = t.virtualServerId;
    // "2001:DB8:9::1" comes before "2001:db8:1:2::7" as written, after it as counted (by /64).
    const denied = [
      { virtualServerId: vs, source: "203.0.113.9" },
      { virtualServerId: vs, source: "2001:db8:1:2::7" },
      { virtualServerId: vs, source: "2001:DB8:9::1" },
      { virtualServerId: vs, source: "192.0.2.1" },
      { virtualServerId: vs, source: "203.0.113.9" },
    ];
    const writes = writeBatcherFor(core.storage.kind, core.storage.db);
    await writes.run((trx, scope) => auth.countDeniedPushes({ trx, scope }, denied));
    await writes.run((trx, scope) => auth.countDeniedPushes({ trx, scope }, [...denied].reverse()));
    const inOrder = [`${vs}:192.0.2.1`, `${vs}:2001:db8:1:2::/64`, `${vs}:2001:db8:9:0::/64`, `${vs}:203.0.113.9`, `${vs}:203.0.113.9`];
    expect(counted).toEqual([...inOrder, ...inOrder]);
  });

  it("counts an IPv6 source with the rest of its /64, so rotating addresses does not escape the limit", async () => {
    for (let i = 0; i < 30; i++) expect(await login(`ghost6-${i}`, "000000", `2001:db8:5:6::${(i + 1).toString(16)}`)).toMatchObject({ reason: "user_unknown" });
    expect(await login("ghost6-x", "000000", "2001:DB8:5:6:ffff:ffff:ffff:1")).toMatchObject({ reason: "rate_limited" });
    expect(await login("ghost6-y", "000000", "2001:db8:5:7::1")).toMatchObject({ reason: "user_unknown" });
    // The trail keeps the address as it came.
    await core.services.audit.settle();
    const last = await core.storage.db.selectFrom("audit_log").select("details").where("action", "=", "auth.reject").orderBy("seq", "desc").limit(1).executeTakeFirstOrThrow();
    expect(JSON.parse(last.details!)).toMatchObject({ source: "2001:db8:5:7::1" });
    // Each virtual server counts its own: another organisation's clients (whose
    // Calling-Station-Id is only their claim) cannot spend this one's limits.
    const elsewhere = await core.services.virtualServers.create(installerPrincipal, { name: "Elsewhere" });
    const other = await core.services.applications.create(installerPrincipal, { virtualServerId: elsewhere.id, name: "other-portal", kind: "rest" });
    const otherApplication = await core.storage.db.selectFrom("applications").selectAll().where("id", "=", other.id).executeTakeFirstOrThrow();
    expect(await core.services.auth.authenticate({ application: otherApplication, userId: "ghost6-z", passcode: "000000", source: "2001:db8:5:6::99", method: "rest" })).toMatchObject({ reason: "user_unknown" });
    const ways = ["::ffff:192.0.2.1", "::ffff:c000:201", "0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1", "2001:db8::1", "2001:db8:0:0:1::", "2001:db8::5:6:7:1.2.3.4", "2001:db8:0:5::1"];
    expect([...ways, "00:11:22:33:44:55", "+15555550100"].map(sourceLimitKey)).toEqual([
      "192.0.2.1",
      "192.0.2.1",
      "192.0.2.1",
      "192.0.2.1",
      "2001:db8:0:0::/64",
      "2001:db8:0:0::/64",
      // A dotted IPv4 tail is two groups: this address's /64 is its fourth group's.
      "2001:db8:0:5::/64",
      "2001:db8:0:5::/64",
      "00:11:22:33:44:55",
      "+15555550100",
    ]);
    // IPv4 clients behind a translator (NAT64/SIIT, RFC 6052's 64:ff9b::/96; the old
    // IPv4-compatible and IPv4-translated forms) are each their own IPv4 address, not one
    // /64 for them all; the unspecified and loopback addresses are not IPv4.
    expect(["64:ff9b::192.0.2.1", "64:ff9b::c000:202", "::192.0.2.3", "::ffff:0:192.0.2.4", "::1", "::"].map(sourceLimitKey)).toEqual(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "0:0:0:0::/64", "0:0:0:0::/64"]);
  });

  it("stops a burst of push requests for unknown users at the source's limit, so it cannot tell which users exist past it", async () => {
    const created = await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "push portal", kind: "rest", pushOtp: true });
    const pushApp = await core.storage.db.selectFrom("applications").selectAll().where("id", "=", created.id).executeTakeFirstOrThrow();
    const outcomes = await Promise.all(Array.from({ length: 60 }, (_, i) => core.services.auth.authenticate({ application: pushApp, userId: `ghost-${i}`, passcode: "", source: "203.0.113.91", method: "rest" })));
    const reasons = outcomes.map((r) => (r.result === "reject" ? r.reason : r.result));
    expect(reasons.filter((reason) => reason !== "user_unknown" && reason !== "rate_limited")).toEqual([]);
    const unknown = reasons.filter((reason) => reason === "user_unknown").length;
    if (kind === "sqlite") {
      expect(unknown).toBe(30);
    } else {
      expect(unknown).toBeGreaterThanOrEqual(30);
      expect(unknown).toBeLessThan(40);
    }
  });

  it("refuses a user id with NUL in it as unknown, and keeps a source with NUL, on both databases (PostgreSQL text holds no NUL)", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "nul" });
    core.clock.advance(30_000);
    expect(await login("nul\0", code(), "192.0.2.30")).toMatchObject({ result: "reject", reason: "user_unknown" });
    const answered = await api.call("POST", "/api/v1/auth", apiKey, { userId: "nul", passcode: code(), sourceAddress: "vpn\0gw" });
    expect(answered.json).toEqual({ result: "accept", serial });
    await core.services.audit.settle();
    const trail = await core.storage.db.selectFrom("audit_log").select(["target_id", "details"]).where("action", "like", "auth.%").orderBy("seq", "desc").limit(2).execute();
    expect(trail.map((row) => JSON.parse(row.details!) as { userId: string; source: string })).toMatchObject([
      { userId: "nul", source: "vpn\\0gw" },
      { userId: "nul\\0", source: "192.0.2.30" },
    ]);
  });

  it("answers REST authenticate with the application's key, audits it without the passcode, and refuses other credentials", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "resty" });
    core.clock.advance(30_000);
    const passcode = code();
    const accepted = await api.call("POST", "/api/v1/auth", apiKey, { userId: "resty", passcode });
    expect(accepted.json).toEqual({ result: "accept", serial });
    const replay = await api.call("POST", "/api/v1/auth", apiKey, { userId: "resty", passcode });
    expect(replay.json).toMatchObject({ result: "reject", reason: "replayed" });
    expect((await api.call("POST", "/api/v1/auth", t.apiKeys.admin, { userId: "resty", passcode })).status).toBe(401);
    expect((await api.call("POST", "/api/v1/auth", null, { userId: "resty", passcode })).status).toBe(401);
    expect((await api.call("POST", "/api/v1/auth", apiKey, { userId: "resty" })).status).toBe(400);
    await core.services.audit.settle();
    const trail = await core.storage.db.selectFrom("audit_log").selectAll().where("action", "like", "auth.%").where("token_serial", "=", serial).execute();
    expect(trail.length).toBeGreaterThanOrEqual(1);
    // Who asked: the caller's own address (here also the source, as no sourceAddress came).
    expect(JSON.parse(trail[0]!.details!)).toMatchObject({ method: "rest", userId: "resty", source: expect.any(String), client: expect.any(String) });
    expect(JSON.stringify(await core.storage.db.selectFrom("audit_log").selectAll().where("action", "like", "auth.%").execute())).not.toContain(passcode);
  });

  it("resynchronises a TOTP token whose clock runs ten minutes slow, and refuses codes that are not consecutive", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "slow" });
    core.clock.advance(30_000);
    const resync = (first: string, second: string) => api.call("POST", `/api/v1/tokens/${serial}/resync`, t.apiKeys.helpdesk, { first, second });
    expect((await resync(code(-20), code(-18))).json.error.code).toBe("RESYNC_FAILED");
    // Typed as the app shows them, in groups: the same codes.
    const grouped = (passcode: string) => `${passcode.slice(0, 3)} ${passcode.slice(3)}`;
    expect((await resync(grouped(code(-20)), grouped(code(-19)))).json).toMatchObject({ drift_steps: -19 });
    expect(await login("slow", code(-19))).toMatchObject({ result: "reject", reason: "replayed" });
    core.clock.advance(30_000);
    expect(await login("slow", code(-19))).toMatchObject({ result: "accept" });
    // The drift a resync learned outlives the logins after it (they keep up to an hour).
    for (let i = 0; i < 3; i++) {
      core.clock.advance(30_000);
      expect(await login("slow", code(-19))).toMatchObject({ result: "accept" });
    }
    expect((await tokenRow(serial)).drift_steps).toBe(-19);
  });

  it("resynchronises an HOTP token from two consecutive codes far ahead, after which neither code, nor any before, logs in", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "hotp-resync" });
    await core.storage.db.updateTable("tokens").set({ otp_mode: "hotp", hotp_counter: 0 }).where("serial", "=", serial).execute();
    const at = (counter: number) => hotp(KEY, { counter, digits: 6, algorithm: "SHA1" });
    // 40 presses ahead: beyond the look-ahead of 10, so a login alone cannot catch up.
    expect(await login("hotp-resync", at(40))).toMatchObject({ result: "reject", reason: "wrong" });
    const resync = (first: string, second: string) => api.call("POST", `/api/v1/tokens/${serial}/resync`, t.apiKeys.helpdesk, { first, second });
    expect((await resync(at(40), at(42))).json.error.code).toBe("RESYNC_FAILED");
    expect((await resync(at(40), at(41))).json).toEqual({ serial, hotp_counter: 42 });
    expect((await tokenRow(serial)).hotp_counter).toBe(42);
    // Two refusals: a third in a row would lock the token.
    for (const spent of [at(41), at(5)]) expect(await login("hotp-resync", spent)).toMatchObject({ result: "reject" });
    expect(await login("hotp-resync", at(42))).toMatchObject({ result: "accept", serial });
    expect((await tokenRow(serial)).hotp_counter).toBe(43);
  });

  // SQLite has one writer: a resync's read and write cannot have another write between them.
  if (kind === "postgres")
    it("does not undo a login accepted on another node while an HOTP resync was running: the counter only moves forward", async () => {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "hotp-race" });
      await core.storage.db.updateTable("tokens").set({ otp_mode: "hotp", hotp_counter: 0 }).where("serial", "=", serial).execute();
      const at = (counter: number) => hotp(KEY, { counter, digits: 6, algorithm: "SHA1" });
      const node2 = await openSecondNode(core);
      try {
        // Node 2 has accepted code 9 (counter 10) and not yet committed when the resync
        // reads the token (counter 0), finds codes 2 and 3 and stores 4: its write waits
        // for node 2's commit, then must not write the counter back.
        let resynced: ReturnType<typeof api.call> | undefined;
        await node2.services.storage.db.transaction().execute(async (trx) => {
          await trx.updateTable("tokens").set({ hotp_counter: 10 }).where("serial", "=", serial).execute();
          const holder = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
          resynced = api.call("POST", `/api/v1/tokens/${serial}/resync`, t.apiKeys.helpdesk, { first: at(2), second: at(3) });
          // The resync waits on this transaction, and on nothing else.
          const blocked = () => sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity where ${holder}::int = any(pg_blocking_pids(pid))`.execute(core.storage.db).then((r) => r.rows[0]!.waiting);
          await expect.poll(blocked, { timeout: 10_000 }).toBe(1);
        });
        expect((await resynced!).json).toMatchObject({ serial, hotp_counter: 10 });
      } finally {
        await node2.close();
      }
      expect((await tokenRow(serial)).hotp_counter).toBe(10);
      expect(await login("hotp-race", at(9))).toMatchObject({ result: "reject" });
    });

  // SQLite has one writer: nothing can suspend the token between a resync's read and write.
  if (kind === "postgres")
    it("does not resync a token suspended on another node while the resync was running", async () => {
      const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "hotp-suspended" });
      await core.storage.db.updateTable("tokens").set({ otp_mode: "hotp", hotp_counter: 0, failures: 2 }).where("serial", "=", serial).execute();
      const at = (counter: number) => hotp(KEY, { counter, digits: 6, algorithm: "SHA1" });
      const node2 = await openSecondNode(core);
      try {
        let resynced: ReturnType<typeof api.call> | undefined;
        await node2.services.storage.db.transaction().execute(async (trx) => {
          await trx.updateTable("tokens").set({ state: "suspended" }).where("serial", "=", serial).execute();
          const holder = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
          resynced = api.call("POST", `/api/v1/tokens/${serial}/resync`, t.apiKeys.helpdesk, { first: at(2), second: at(3) });
          const blocked = () => sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity where ${holder}::int = any(pg_blocking_pids(pid))`.execute(core.storage.db).then((r) => r.rows[0]!.waiting);
          await expect.poll(blocked, { timeout: 10_000 }).toBe(1);
        });
        const answer = await resynced!;
        expect(answer.status).toBe(409);
        expect(answer.json.error).toMatchObject({ code: "TOKEN_STATE_CONFLICT" });
      } finally {
        await node2.close();
      }
      expect(await tokenRow(serial)).toMatchObject({ state: "suspended", hotp_counter: 0, failures: 2 });
      await core.services.audit.settle();
      expect(await core.storage.db.selectFrom("audit_log").select("seq").where("action", "=", "token.resync").where("target_id", "=", serial).execute()).toEqual([]);
    });

  it("never moves the accepted step back on a resync, so a passcode once accepted stays spent", async () => {
    const serial = await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "spent" });
    core.clock.advance(30_000);
    const seen = code();
    expect(await login("spent", seen)).toMatchObject({ result: "accept" });
    const accepted = Number((await tokenRow(serial)).last_totp_step);
    const resynced = await api.call("POST", `/api/v1/tokens/${serial}/resync`, t.apiKeys.helpdesk, { first: code(-20), second: code(-19) });
    expect(resynced.json).toMatchObject({ drift_steps: -19, last_totp_step: accepted });
    // Nineteen steps later the device's expected step is the one accepted before: the
    // passcode seen then would be inside the window again, and must still be refused.
    core.clock.advance(19 * 30_000);
    expect(await login("spent", seen)).toMatchObject({ result: "reject", reason: "replayed" });
    core.clock.advance(30_000);
    expect(await login("spent", code(-19))).toMatchObject({ result: "accept" });
  });

  it("counts authentications and their latency in the Prometheus metrics", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "counted" });
    core.clock.advance(30_000);
    await api.call("POST", "/api/v1/auth", apiKey, { userId: "counted", passcode: code() });
    await api.call("POST", "/api/v1/auth", apiKey, { userId: "counted", passcode: "000000" === code() ? "111111" : "000000" });
    const metrics = await api.app.inject({ method: "GET", url: "/metrics" });
    expect(metrics.headers["content-type"]).toContain("text/plain");
    expect(metrics.body).toMatch(/tessera_authentications_total\{method="rest",result="accept",reason=""\} [1-9]/);
    expect(metrics.body).toMatch(/tessera_authentications_total\{method="rest",result="reject",reason="wrong"\} [1-9]/);
    // No RADIUS server here: none of its figures, rather than gauges that say 0.
    expect(metrics.body).not.toMatch(/tessera_radius_/);
    expect(metrics.body).toMatch(/tessera_authentication_duration_seconds_bucket\{le="0.01",method="rest"\}/);
    expect(metrics.body).toContain("tessera_http_request_duration_seconds_bucket");
  });

  it("refuses push requests with a reason that says to type the passcode, the same for every user id where push is off", async () => {
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "pusher" });
    const told = await login("pusher", "");
    expect(told).toMatchObject({ result: "reject", reason: "push_unavailable" });
    expect(await login("nobody-by-this-name", "")).toEqual(told);
    // One character is a push request too, an emoji included; two are a passcode.
    expect(await login("pusher", "😀")).toEqual(told);
    expect(await login("pusher", "x")).toEqual(told);
    expect(await login("pusher", "xy")).toMatchObject({ result: "reject", reason: "wrong" });
  });

  it("tells an unknown user asking for push what a user without push is told", async () => {
    const created = await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "push desk", kind: "rest", pushOtp: true });
    const pushApp = await core.storage.db.selectFrom("applications").selectAll().where("id", "=", created.id).executeTakeFirstOrThrow();
    await placeTokenInState(core.services, t.virtualServerId, "active", { userId: "typist" });
    const ask = (userId: string) => core.services.auth.authenticate({ application: pushApp, userId, passcode: "", source: "192.0.2.77", method: "radius" });
    const withoutPush = await ask("typist");
    const unknown = await ask("nobody-here");
    expect(withoutPush).toMatchObject({ result: "reject", reason: "push_unavailable" });
    expect(unknown).toMatchObject({ result: "reject", reason: "user_unknown" });
    expect(unknown.result === "reject" && withoutPush.result === "reject" && unknown.message === withoutPush.message).toBe(true);
  });
});

// Only PostgreSQL keeps the counts in a table (SQLite, one server, in its memory).
describe("ended guessing-limit windows on PostgreSQL", () => {
  let core: TestCore | undefined;
  beforeAll(async () => {
    core = await createTestCore("postgres");
  });
  // Should the setup fail, its error is the one to read, not a second one from here.
  afterAll(async () => core?.close());

  it("sweeps ended windows a thousand at a time until none is left, and keeps the windows still running", async () => {
    const { storage, clock } = core!;
    const { db } = storage;
    const now = clock.nowMs();
    const ended = Array.from({ length: 2500 }, (_, i) => ({ key: `source:sweep-${i}`, failures: 1, window_ends: now - 1 }));
    for (let i = 0; i < ended.length; i += 500) await db.insertInto("auth_failures").values(ended.slice(i, i + 500)).execute();
    await db.insertInto("auth_failures").values({ key: "source:sweep-running", failures: 3, window_ends: now + 60_000 }).execute();
    endedWindowSweeper(db, clock)();
    const left = async () => (await db.selectFrom("auth_failures").select("key").where("key", "like", "source:sweep-%").execute()).map((row) => row.key);
    await expect.poll(left, { timeout: 10_000 }).toEqual(["source:sweep-running"]);
  });

  it("deletes a user's count in the statement that stores the step only when the step was stored", async () => {
    const { storage, clock, services } = core!;
    const { db } = storage;
    const t = await createTenant(services, "Forget");
    const serial = await placeTokenInState(services, t.virtualServerId, "active", { userId: "kept" });
    const limits = databaseGuessingLimits(db, clock, { sourceFailures: 30, userFailures: 10, windowSeconds: 600 });
    const store = prepareAuditedUpdate<{ serial: string } & TakeParams>(db, (db, param) => db.updateTable("tokens").set({ updated_at: 1 }).where("serial", "=", param("serial")), limits.takenAtOnce!.forget);
    const params = limits.takenAtOnce!.params("192.0.2.1", `${t.virtualServerId}:kept`);
    await db.insertInto("auth_failures").values({ key: params.takeUserKey, failures: 3, window_ends: clock.nowMs() + 60_000 }).execute();
    const record = auditFields(installerPrincipal, { action: "test.store", virtualServerId: t.virtualServerId, targetType: "token", targetId: serial }, clock.nowMs());
    const count = async () => (await db.selectFrom("auth_failures").select("failures").where("key", "=", params.takeUserKey).executeTakeFirst())?.failures;
    // A compare-and-set that changed nothing (another login won, the token was locked): the count stays.
    expect(Number((await db.executeQuery(store({ serial: "no-such-serial", ...params, ...record }))).numAffectedRows)).toBe(0);
    expect(await count()).toBe(3);
    expect(Number((await db.executeQuery(store({ serial, ...params, ...record }))).numAffectedRows)).toBe(1);
    expect(await count()).toBeUndefined();
  });
});

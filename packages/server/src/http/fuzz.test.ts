import type { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { canonicalRequest, exportPublicKey, generateEnrollmentKeys, sha256Base64url, signRequest } from "@tessera/otp";
import type { Kysely } from "kysely";
import { expect, it } from "vitest";
import { errorCatalogue } from "../errors.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { hashEnrollmentCode, newEnrollmentCode } from "../modules/provisioning/codes.js";
import { describeEachDatabase, snapshotTables, type TestCore } from "../testing/databases.js";
import { simulatedDevice } from "../testing/device.js";
import type { TestTenant } from "../testing/fixtures.js";
import { BODY_LIMIT_BYTES, describeCase, fetchCase, rawCase, sendRaw, type Answer, type Case, type Target } from "../testing/http-fuzz.js";
import { fuzzSeed, seededRandom } from "../testing/random.js";
import { useTestApp, type TestApp } from "./testing-app.js";

// Malformed REST bodies from a seeded generator, sent to the real server on a loopback
// port: most through fetch, the lies about framing (Content-Length, chunks cut off) over
// raw sockets. Every body fails validation, so the only right answers are the refusals
// of malformed input; a well-formed request with a wrong passcode would be a legitimate,
// audited rejection and is never generated. The RADIUS half is
// radius/server-datagrams.test.ts. Replay a run with TESSERA_FUZZ_SEED=<seed>.

const seed = fuzzSeed();

const FETCHED_REQUESTS = 2_400;
const RAW_REQUESTS = 400;
const CONCURRENCY = 8;
/** The codes that refuse malformed input; any other code means a body got past validation. */
const MALFORMED_INPUT_CODES = ["VALIDATION_FAILED", "MALFORMED_JSON", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "REQUEST_INCOMPLETE", "MALFORMED_REQUEST"];

/** Why an answer is wrong for a malformed request, or null when it is right. */
function problemWith(fuzzCase: Case, answer: Answer | "closed" | null): string | null {
  if (answer === "closed") return fuzzCase.framing === "eof" ? null : "closed without an answer";
  if (answer === null) return "neither answered nor closed the connection";
  if (answer.status < 400 || answer.status >= 500) return `status ${answer.status}`;
  if (fuzzCase.target.page && answer.status === 404 && answer.contentType.startsWith("text/html")) return null;
  let code: unknown;
  try {
    const parsed = JSON.parse(answer.body) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.message === "string") code = parsed.error.code;
  } catch {
    // Not JSON: judged below.
  }
  if (typeof code === "string") {
    if (!(code in errorCatalogue)) return `code ${code} is not in the catalogue`;
    return MALFORMED_INPUT_CODES.includes(code) ? null : `code ${code}: the body got past validation`;
  }
  return `${answer.status} without the error shape`;
}

async function inPool<T>(items: readonly T[], concurrency: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) await run(items[next++]!);
  }));
}

describeEachDatabase("malformed REST bodies from a generator", (kind) => {
  let core: TestCore;
  let api: TestApp;
  let t: TestTenant;
  let baseUrl: string;
  let pushKey: string;
  let holder: { device: Awaited<ReturnType<typeof simulatedDevice>>; serial: string };
  const problems: string[] = [];
  const serverStatuses: Array<{ request: string; status: number; wellFramed: boolean }> = [];
  let before: Awaited<ReturnType<typeof snapshotTables>>;
  let after: typeof before;

  /** A user with a mobile token in enrollment, and the code that enrolls it. */
  async function invitedUser(userId: string) {
    await core.services.users.create(installerPrincipal, t.virtualServerId, { userId, firstName: userId, lastName: "", email: `${userId}@example.test`, groups: [] });
    await core.services.provisioning.createTask(installerPrincipal, { virtualServerId: t.virtualServerId, users: { userIds: [userId] }, tokenType: "mobile", apps: ["tessera"] });
    const code = newEnrollmentCode();
    const user = await core.storage.db.selectFrom("users").select("id").where("user_id", "=", userId).executeTakeFirstOrThrow();
    await core.storage.db.updateTable("enrollments").set({ code_hash: hashEnrollmentCode(code) }).where("user_pk", "=", user.id).execute();
    return code;
  }

  const bearer = (key: string) => async () => ({ authorization: `Bearer ${key}` });
  const unauthenticated = async () => ({});
  const signedBy = (device: Awaited<ReturnType<typeof simulatedDevice>>, method: string, path: string) => async (body: Buffer) => {
    const timestampMs = core.clock.nowMs();
    const canonical = canonicalRequest({ method, path, bodySha256Base64url: await sha256Base64url(body.toString()), timestampMs, deviceId: device.deviceId });
    return { "x-tessera-device-id": device.deviceId, "x-tessera-timestamp": String(timestampMs), "x-tessera-signature": await signRequest(device.keys.signing.privateKey, canonical) };
  };

  async function createTargets(): Promise<Target[]> {
    const vs = t.virtualServerId;
    const admin = bearer(t.apiKeys.admin);
    const inviteeCode = await invitedUser("fuzz-invitee");
    const enroller = await simulatedDevice(api, () => core.clock.nowMs());
    const enrollmentId = (await enroller.enroll(await invitedUser("fuzz-enroller"), true)).json.enrollmentId as string;
    const challengeId = (await api.call("POST", "/api/v1/auth", pushKey, { userId: "fuzz-holder", passcode: "" })).json.challengeId as string;
    const keys = await generateEnrollmentKeys();
    const unknownCode = newEnrollmentCode();
    const device = (operation: string, method: "POST" | "PUT", path: string, signer: typeof enroller) => ({ operation, method, path, headers: signedBy(signer, method, path) });
    const adminPost = (operation: string, path: string) => ({ operation, method: "POST" as const, path, headers: admin });
    return [
      {
        operation: "authenticate", method: "POST", path: "/api/v1/auth", headers: bearer(pushKey),
        valid: { userId: "fuzz-holder", passcode: "123456", sourceAddress: "198.51.100.7" },
        optional: ["sourceAddress"], maxLength: { userId: 128, passcode: 16, sourceAddress: 64 },
      },
      {
        operation: "createSession", method: "POST", path: "/api/v1/sessions", headers: unauthenticated,
        valid: { email: `admin@${vs}.test`, password: "a long enough password" }, maxLength: { email: 254, password: 1024 },
      },
      {
        operation: "enrollDevice", method: "POST", path: "/device/v1/enrollments", headers: unauthenticated,
        valid: {
          code: inviteeCode, agreementPublicKey: await exportPublicKey(keys.agreement.publicKey), signingPublicKey: await exportPublicKey(keys.signing.publicKey),
          deviceId: "fuzz-device", platform: { os: "Android", osVersion: "15", deviceType: "phone", appVersion: "1.0.0" }, pushPermitted: true,
          pushSubscription: { endpoint: "https://push.example.test/fuzz", keys: { p256dh: "key", auth: "secret" } }, liveCapable: true,
        },
        optional: ["deviceId", "platform.osVersion", "pushSubscription", "liveCapable"], nullable: ["platform.osVersion"],
        maxLength: { code: 64, agreementPublicKey: 87, signingPublicKey: 87, deviceId: 64, "platform.os": 40, "platform.osVersion": 40, "platform.deviceType": 40, "platform.appVersion": 40 },
      },
      { ...device("confirmEnrollment", "POST", `/device/v1/enrollments/${enrollmentId}/confirm`, enroller), valid: { otp: "123456" }, maxLength: { otp: 16 } },
      { ...device("updateDeviceSettings", "PUT", `/device/v1/devices/${holder.device.deviceId}/settings`, holder.device), valid: { autosendPasscode: false } },
      {
        ...device("answerChallenge", "POST", `/device/v1/challenges/${challengeId}/answer`, holder.device),
        valid: { decision: "approve", serial: holder.serial, otp: "123456" }, optional: ["serial", "otp"], enums: ["decision"], maxLength: { serial: 64, otp: 16 },
      },
      {
        ...adminPost("createApplication", "/api/v1/applications"),
        valid: { kind: "rest", virtualServerId: vs, name: "fuzzed", resourceName: "Fuzzed", pushOtp: true },
        optional: ["resourceName", "pushOtp"], enums: ["kind"], maxLength: { virtualServerId: 64, name: 128, resourceName: 128 },
      },
      {
        ...adminPost("createUser", `/api/v1/virtual-servers/${vs}/users`),
        valid: { userId: "fuzzed-user", firstName: "Fuzzed", lastName: "User", email: "fuzzed@example.test", groups: ["fuzz"] },
        optional: ["firstName", "lastName", "email", "groups"], maxLength: { userId: 128, firstName: 128, lastName: 128, email: 254, "groups.0": 128 },
      },
      { ...adminPost("importUsers", `/api/v1/virtual-servers/${vs}/users/import`), valid: { csv: "userId\nfuzzed-import\n" } },
      {
        ...adminPost("addTokens", "/api/v1/tokens"), valid: { virtualServerId: vs, type: "mobile", count: 2 },
        enums: ["type"], integers: { count: [1, 100_000] }, maxLength: { virtualServerId: 64 },
      },
      { ...adminPost("resyncToken", `/api/v1/tokens/${holder.serial}/resync`), valid: { first: "123456", second: "654321" }, maxLength: { first: 8, second: 8 } },
      { ...adminPost("revokeToken", `/api/v1/tokens/${holder.serial}/revoke`), valid: { to: "lost", reason: "fuzzed" }, enums: ["to"], maxLength: { reason: 500 } },
      { ...adminPost("suspendToken", `/api/v1/tokens/${holder.serial}/suspend`), valid: { reason: "fuzzed" }, optional: ["reason"], maxLength: { reason: 500 } },
      { operation: "enrollment page: confirm", method: "POST", path: `/enroll/${unknownCode}/confirm`, headers: unauthenticated, valid: { otp: "123456" }, page: true },
      { operation: "enrollment page: confirm OTP app", method: "POST", path: `/enroll/${unknownCode}/otp-app/confirm`, headers: unauthenticated, valid: { otp: "123456" }, page: true },
    ];
  }

  async function send(fuzzCase: Case, port: number): Promise<Answer | "closed" | null> {
    const { target, send: how } = fuzzCase;
    const tag = { "x-fuzz-case": String(fuzzCase.id) };
    if (how.via === "raw") return sendRaw(port, how.request({ ...tag, ...(await target.headers(how.signedBody)) }), fuzzCase.framing === "eof");
    const headers = { ...tag, ...(await target.headers(how.body)), ...(how.contentType === null ? {} : { "content-type": how.contentType }) };
    const response = await fetch(`${baseUrl}${target.path}`, { method: target.method, headers, body: how.body });
    return { status: response.status, contentType: response.headers.get("content-type") ?? "", body: await response.text() };
  }

  useTestApp(kind, "Fuzz", async (setting) => {
    ({ core, api, t } = setting);
    await core.services.tokens.add(installerPrincipal, { virtualServerId: t.virtualServerId, type: "mobile", count: 5 });
    pushKey = (await core.services.applications.create(installerPrincipal, { virtualServerId: t.virtualServerId, name: "portal", kind: "rest", pushOtp: true })).apiKey!;
    const code = await invitedUser("fuzz-holder");
    const device = await simulatedDevice(api, () => core.clock.nowMs());
    const enrolled = await device.enroll(code, true);
    await device.confirm(enrolled.json.enrollmentId, device.passcode());
    holder = { device, serial: enrolled.json.serial };
    const targets = await createTargets();
    // The API key records its first use; with the test's clock standing still, only this one.
    await api.call("GET", "/api/v1/me", t.apiKeys.admin);

    await api.app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = api.app.server.address() as AddressInfo;
    baseUrl = `http://127.0.0.1:${port}`;
    // The server's own view: every response's status, including ones nobody stayed to read.
    const responses: Array<{ caseId: number; response: ServerResponse; closed: Promise<void> }> = [];
    api.app.server.on("request", (request, response: ServerResponse) => {
      responses.push({ caseId: Number(request.headers["x-fuzz-case"]), response, closed: new Promise((resolve) => response.once("close", () => resolve())) });
    });

    const random = seededRandom(seed);
    const cases = Array.from({ length: FETCHED_REQUESTS + RAW_REQUESTS }, (_, id) =>
      id < FETCHED_REQUESTS ? fetchCase(id, random.pick(targets), random) : rawCase(id, random.pick(targets), random),
    );
    // The records of the setup linked into the audit chain first, on both sides of the
    // comparison: on PostgreSQL a record moves from audit_pending to audit_log moments after its commit.
    await core.services.audit.settle();
    before = await snapshotTables(core.storage.db as Kysely<unknown>);
    const startedMs = Date.now();
    await inPool(cases, CONCURRENCY, async (fuzzCase) => {
      const answer = await send(fuzzCase, port).catch((error: unknown) => ({ status: 0, contentType: "", body: `request failed: ${String(error)}` }));
      const problem = problemWith(fuzzCase, answer);
      if (problem) problems.push(`${describeCase(fuzzCase)}: ${problem}; ${typeof answer === "object" ? answer?.body.slice(0, 160) : ""}`);
    });
    await Promise.all(responses.map(({ closed }) => closed));
    serverStatuses.push(...responses.map(({ caseId, response }) => ({ request: describeCase(cases[caseId]), status: response.statusCode, wellFramed: cases[caseId]?.framing === undefined })));
    await core.services.audit.settle();
    after = await snapshotTables(core.storage.db as Kysely<unknown>);
    const kinds = new Map<string, number>();
    for (const { kind: caseKind } of cases) kinds.set(caseKind, (kinds.get(caseKind) ?? 0) + 1);
    console.info(`REST fuzz [${kind}] seed ${seed}: ${cases.length} requests (${RAW_REQUESTS} over raw sockets) to ${targets.length} endpoints in ${Date.now() - startedMs} ms; ${[...kinds].map(([name, count]) => `${name} ${count}`).join(", ")}`);
  }, { bodyLimitBytes: BODY_LIMIT_BYTES });

  it("refuses every malformed request with a 4xx in the error shape, its code from the catalogue and one of malformed input", () => {
    expect(problems.slice(0, 25), `seed ${seed}: ${problems.length} wrong answers`).toEqual([]);
  });

  it("never sets a 5xx status on a well-framed request, not even on an answer nobody stayed to read", () => {
    expect(serverStatuses.filter(({ wellFramed }) => wellFramed).length).toBeGreaterThan(FETCHED_REQUESTS);
    expect(serverStatuses.filter(({ wellFramed, status }) => wellFramed && status >= 500), `seed ${seed}`).toEqual([]);
  });

  // When a body stops short (the client goes, or a chunk size cannot be read), Node aborts
  // the request: that is the client's doing (REQUEST_INCOMPLETE), not an internal error to
  // log, even though nobody is left to read the answer.
  it("does not take a request whose body never arrived whole for an internal error", () => {
    expect(serverStatuses.filter(({ wellFramed }) => !wellFramed).length).toBeGreaterThan(0);
    expect(serverStatuses.filter(({ wellFramed, status }) => !wellFramed && status >= 500), `seed ${seed}`).toEqual([]);
  });

  it("changes no row of any table", () => {
    expect(Object.keys(before)).toEqual(expect.arrayContaining(["tokens", "users", "applications", "enrollments", "devices", "challenges", "audit_log"]));
    expect(after, `seed ${seed}`).toEqual(before);
  });

  it("still answers /healthz and accepts a valid passcode afterwards", async () => {
    expect((await fetch(`${baseUrl}/healthz`)).status).toBe(200);
    core.clock.advance(30_000);
    const response = await fetch(`${baseUrl}/api/v1/auth`, {
      method: "POST",
      headers: { authorization: `Bearer ${pushKey}`, "content-type": "application/json" },
      body: JSON.stringify({ userId: "fuzz-holder", passcode: holder.device.passcode() }),
    });
    expect(await response.json()).toMatchObject({ result: "accept", serial: holder.serial });
  });
});

import { createHash } from "node:crypto";
import type { ServerResponse } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { canonicalRequest, exportPublicKey, generateEnrollmentKeys, sha256Base64url, signRequest } from "@tessera/otp";
import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { errorCatalogue } from "../errors.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { hashEnrollmentCode, newEnrollmentCode } from "../modules/provisioning/codes.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../testing/databases.js";
import { simulatedDevice } from "../testing/device.js";
import { createTenant, type TestTenant } from "../testing/fixtures.js";
import { createTestApp } from "./testing-app.js";

// Malformed REST bodies from a seeded generator, sent to the real server on a loopback
// port: most through fetch, the lies about framing (Content-Length, chunks cut off) over
// raw sockets. Every body fails validation, so the only right answers are the refusals
// of malformed input; a well-formed request with a wrong passcode would be a legitimate,
// audited rejection and is never generated. The RADIUS half is
// radius/server-datagrams.test.ts. Replay a run with TESSERA_FUZZ_SEED=<seed>.

const seed = process.env.TESSERA_FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(process.env.TESSERA_FUZZ_SEED);
if (!Number.isSafeInteger(seed)) throw new Error(`TESSERA_FUZZ_SEED must be a whole number, got ${process.env.TESSERA_FUZZ_SEED}`);

const FETCHED_REQUESTS = 2_400;
const RAW_REQUESTS = 400;
const CONCURRENCY = 8;
const BODY_LIMIT_BYTES = 64 * 1024;
/** The codes that refuse malformed input; any other code means a body got past validation. */
const MALFORMED_INPUT_CODES = ["VALIDATION_FAILED", "MALFORMED_JSON", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "REQUEST_INCOMPLETE", "MALFORMED_REQUEST"];

/** mulberry32: a small seeded generator, so that a failing run can be replayed. */
function seededRandom(seedValue: number) {
  let state = seedValue >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (maxExclusive: number) => Math.floor(next() * maxExclusive);
  return {
    int,
    between: (min: number, max: number) => min + int(max - min + 1),
    pick: <T>(items: readonly T[]): T => items[int(items.length)]!,
    bytes: (length: number) => Buffer.from(Array.from({ length }, () => int(256))),
  };
}
type Random = ReturnType<typeof seededRandom>;

// JSON as the generator writes it: besides plain values, literals JSON.stringify cannot
// write (1e309) and objects with repeated keys.
class RawJson {
  constructor(readonly text: string) {}
}
class Entries {
  constructor(readonly entries: Array<[string, Json]>) {}
}
type Json = null | boolean | number | string | Json[] | { [key: string]: Json } | RawJson | Entries;

const isObject = (value: Json): value is { [key: string]: Json } =>
  value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof RawJson) && !(value instanceof Entries);
const typeOf = (value: Json) => (value === null ? "null" : Array.isArray(value) ? "array" : value instanceof RawJson ? "number" : typeof value);

function toJson(value: Json): string {
  if (value instanceof RawJson) return value.text;
  if (value instanceof Entries) return `{${value.entries.map(([key, item]) => `${JSON.stringify(key)}:${toJson(item)}`).join(",")}}`;
  if (Array.isArray(value)) return `[${value.map(toJson).join(",")}]`;
  if (isObject(value)) return toJson(new Entries(Object.entries(value)));
  return JSON.stringify(value);
}

/** Every value below the root, with its path. */
function nodesOf(value: Json, path: string[] = []): Array<{ path: string[]; value: Json }> {
  const children: Array<[string, Json]> = Array.isArray(value) ? value.map((item, index) => [String(index), item]) : isObject(value) ? Object.entries(value) : [];
  return children.flatMap(([key, child]) => [{ path: [...path, key], value: child }, ...nodesOf(child, [...path, key])]);
}

const absent = Symbol("absent");
/** A copy with the value at `path` replaced, or removed when `replace` gives `absent`. */
function replaceAt(value: Json, path: readonly string[], replace: (old: Json) => Json | typeof absent): Json {
  const [head, ...rest] = path;
  if (head === undefined) return replace(value) as Json;
  const swap = (child: Json) => (rest.length === 0 ? replace(child) : replaceAt(child, rest, replace));
  if (Array.isArray(value)) return value.map((item, index) => (String(index) === head ? swap(item) : item)).filter((item): item is Json => item !== absent);
  // Object.fromEntries defines "__proto__" as an own key, as JSON.parse does.
  return Object.fromEntries(
    Object.entries(value as object).flatMap(([key, child]: [string, Json]) => {
      const next = key === head ? swap(child) : child;
      return next === absent ? [] : [[key, next]];
    }),
  );
}

/** An endpoint that takes a body, with one body it accepts and what its schema demands. */
interface Target {
  operation: string;
  method: "POST" | "PUT";
  path: string;
  valid: { [key: string]: Json };
  /** Dotted paths that may be left out; everything else is required. */
  optional?: string[];
  nullable?: string[];
  maxLength?: Record<string, number>;
  /** Dotted paths of closed sets of strings. */
  enums?: string[];
  integers?: Record<string, [min: number, max: number]>;
  headers(body: Buffer): Promise<Record<string, string>>;
  /** The HTML enrollment page, which answers an unknown code with a page, not JSON. */
  page?: boolean;
}

// Objects that break String(value) and the like: their methods are shadowed by data.
const shadowing: Json[] = [{ toString: "x", valueOf: "x" }, { toString: null }, { constructor: { prototype: { isAdmin: true } } }];
const extraKeys = ["isAdmin", "__proto__", "__proto__", "constructor", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "", " ", "userId\u0000", "\u{1F600}", "k".repeat(300)];
const notInAnyEnum = ["", " ", "APPROVE", "Lost", "mobile ", "other", "__proto__", "toString", "null", "approve,deny"];
const badIntegers = (min: number, max: number) => ["1e309", "-1e309", "1e21", "12345678901234567890123456789", "1.5", "-0.0001", String(min - 1), String(max + 1)];
const refusedContentTypes = ["text/plain", "application/xml", "application/octet-stream", "multipart/form-data; boundary=fuzz", "application/jsonx", "json", "text/json", "*/*"];

function otherTypeThan(value: Json, nullable: boolean, random: Random): Json {
  const candidates: Json[] = [12345, -1, 0.5, new RawJson("1e309"), new RawJson("123456789012345678901234567890"), true, false, "text", [], ["text"], {}, ...shadowing, ...(nullable ? [] : [null])];
  return random.pick(candidates.filter((candidate) => typeOf(candidate) !== typeOf(value)));
}

function deeplyNested(random: Random): RawJson {
  const depth = random.between(500, 8_000);
  return new RawJson(random.int(2) ? "[".repeat(depth) + "]".repeat(depth) : '{"a":'.repeat(depth) + "null" + "}".repeat(depth));
}

/**
 * One defect each, which on its own makes the body invalid. (Two could cancel out:
 * removing an optional field whose type was broken gives a valid body.)
 */
const defects: Record<string, (target: Target, random: Random) => Json | null> = {
  wrongType(target, random) {
    const node = random.pick(nodesOf(target.valid));
    return replaceAt(target.valid, node.path, (old) => otherTypeThan(old, target.nullable?.includes(node.path.join(".")) ?? false, random));
  },
  missingField(target, random) {
    const required = nodesOf(target.valid).filter(({ path }) => !/^\d+$/.test(path.at(-1)!) && !target.optional?.includes(path.join(".")));
    return required.length === 0 ? null : replaceAt(target.valid, random.pick(required).path, () => absent);
  },
  extraField(target, random) {
    const objects = [{ path: [] as string[], value: target.valid as Json }, ...nodesOf(target.valid)].filter(({ value }) => isObject(value));
    const { path } = random.pick(objects);
    const extra: [string, Json] = [random.pick(extraKeys), random.pick<Json>([true, null, "x", 1, { isAdmin: true }, ...shadowing])];
    return replaceAt(target.valid, path, (old) => new Entries([...Object.entries(old as object), extra]));
  },
  overlongString(target, random) {
    const limits = Object.entries(target.maxLength ?? {});
    if (limits.length === 0) return null;
    const [path, max] = random.pick(limits);
    return replaceAt(target.valid, path.split("."), () => "A".repeat(max + random.between(1, 2_000)));
  },
  notInEnum(target, random) {
    return target.enums ? replaceAt(target.valid, random.pick(target.enums).split("."), () => random.pick(notInAnyEnum)) : null;
  },
  badInteger(target, random) {
    const ranges = Object.entries(target.integers ?? {});
    if (ranges.length === 0) return null;
    const [path, [min, max]] = random.pick(ranges);
    return replaceAt(target.valid, path.split("."), () => new RawJson(random.pick(badIntegers(min, max))));
  },
  // JSON.parse keeps the last of repeated keys: the last one here is wrong.
  duplicateKey(target, random) {
    const objects = [{ path: [] as string[], value: target.valid as Json }, ...nodesOf(target.valid)].filter(({ value }) => isObject(value) && Object.keys(value).length > 0);
    const { path, value } = random.pick(objects);
    const [key, old] = random.pick(Object.entries(value as object) as Array<[string, Json]>);
    const repeated: [string, Json] = [key, otherTypeThan(old, target.nullable?.includes([...path, key].join(".")) ?? false, random)];
    return replaceAt(target.valid, path, (object) => new Entries([...Object.entries(object as object), repeated]));
  },
  deepNesting(target, random) {
    const node = random.pick(nodesOf(target.valid));
    return random.int(3) === 0 ? deeplyNested(random) : replaceAt(target.valid, node.path, () => deeplyNested(random));
  },
  notAnObject(target, random) {
    return random.pick<Json>([null, [], [target.valid], "text", toJson(target.valid), 0, true, new RawJson("1e309")]);
  },
};
const defectNames = Object.keys(defects);

function withDefect(target: Target, random: Random): { kind: string; text: string } {
  for (;;) {
    const kind = random.pick(defectNames);
    const body = defects[kind]!(target, random);
    if (body !== null) return { kind, text: toJson(body) };
  }
}

/** Bytes that are never valid UTF-8, spliced into a body that is already invalid. */
function withInvalidUtf8(text: string, random: Random): Buffer {
  let bytes = Buffer.from(text);
  for (let count = random.between(1, 8); count > 0; count--) {
    const at = random.int(bytes.length + 1);
    const junk = Buffer.from(random.pick([[0x80], [0xbf], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf5], [0xff, 0xfe]]));
    bytes = Buffer.concat([bytes.subarray(0, at), junk, bytes.subarray(at)]);
  }
  return bytes;
}

interface Case {
  id: number;
  target: Target;
  kind: string;
  /** Through fetch: a body and its content type (null: none). Over a raw socket: the whole request. */
  send: { via: "fetch"; body: Buffer; contentType: string | null } | { via: "raw"; request(headers: Record<string, string>): Buffer; signedBody: Buffer };
  /**
   * A message that is not well framed: "eof", the client half-closes before the body ends
   * (and may get no answer at all); "broken", Node's HTTP parser cannot read it (a bad
   * chunk size or Content-Length, both lengths at once, bytes after a short length).
   */
  framing?: "eof" | "broken";
}

function fetchCase(id: number, target: Target, random: Random): Case {
  const valid = toJson(target.valid);
  const json = (kind: string, body: string | Buffer): Case => ({ id, target, kind, send: { via: "fetch", body: Buffer.from(body), contentType: "application/json" } });
  switch (random.pick(["defect", "defect", "defect", "defect", "truncated", "truncated", "randomBytes", "invalidUtf8", "contentType", "overLimit"])) {
    case "defect": {
      const { kind, text } = withDefect(target, random);
      return json(kind, text);
    }
    case "truncated":
      return json("truncated", valid.slice(0, random.int(valid.length)));
    case "randomBytes":
      return json("randomBytes", random.bytes(random.between(1, 3_000)));
    case "invalidUtf8":
      return json("invalidUtf8", withInvalidUtf8(withDefect(target, random).text, random));
    case "contentType": {
      const contentType = random.pick([...refusedContentTypes, null]);
      return { id, target, kind: "contentType", send: { via: "fetch", body: Buffer.from(valid), contentType } };
    }
    default:
      // Valid JSON but for its size: whitespace after the opening brace.
      return json("overLimit", `{${" ".repeat(BODY_LIMIT_BYTES + random.between(0, 20_000))}${valid.slice(1)}`);
  }
}

function rawCase(id: number, target: Target, random: Random): Case {
  const valid = Buffer.from(toJson(target.valid));
  const invalid = Buffer.from(withDefect(target, random).text);
  const chunked = (body: Buffer, sizeLine: (index: number, size: number) => string = (_index, size) => size.toString(16)) => {
    const chunks: Buffer[] = [];
    for (let at = 0, index = 0; at < body.length; index++) {
      const size = Math.min(body.length - at, random.between(1, 4_096));
      chunks.push(Buffer.from(`${sizeLine(index, size)}\r\n`), body.subarray(at, at + size), Buffer.from("\r\n"));
      at += size;
    }
    return chunks;
  };
  const lastChunk = Buffer.from("0\r\n\r\n");
  const json = "Content-Type: application/json";
  // The signature headers are added when the request is sent; everything random is drawn here.
  const raw = (kind: string, signedBody: Buffer, lines: string[], body: Buffer[], framing?: Case["framing"]): Case => {
    const request = (headers: Record<string, string>) => {
      const head = [`${target.method} ${target.path} HTTP/1.1`, "Host: tessera.test", ...lines, ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)];
      return Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`), ...body]);
    };
    return { id, target, kind, send: { via: "raw", request, signedBody }, framing };
  };
  switch (random.pick(["longer", "shorter", "chunkedCut", "chunkedBadSize", "chunkedOverLimit", "chunkedInvalid", "hugeLength", "lengthAndChunked", "badLength", "noContentType"])) {
    case "longer":
      return raw("lengthLonger", valid, [json, `Content-Length: ${valid.length + random.between(1, 5_000)}`], [valid], "eof");
    case "shorter":
      return raw("lengthShorter", valid, [json, `Content-Length: ${random.int(valid.length)}`, ...(random.int(2) ? ["Connection: close"] : [])], [valid], "broken");
    case "chunkedCut": {
      // Every chunk of the body, or only some, or one cut short; never the last, empty chunk.
      const pieces = chunked(valid);
      const kept = pieces.slice(0, random.between(0, pieces.length));
      const last = kept.pop();
      if (last) kept.push(random.int(2) ? last : last.subarray(0, random.int(last.length)));
      return raw("chunkedCut", valid, [json, "Transfer-Encoding: chunked"], kept, "eof");
    }
    case "chunkedBadSize": {
      const bad = random.pick(["zz", "-1", "ffffffffffffffffff", "5 5", "0x10"]);
      return raw("chunkedBadSize", invalid, [json, "Transfer-Encoding: chunked"], [...chunked(invalid, (index, size) => (index === 0 ? bad : size.toString(16))), lastChunk], "broken");
    }
    case "chunkedOverLimit": {
      const big = Buffer.alloc(BODY_LIMIT_BYTES + random.between(1, 20_000), "A");
      return raw("chunkedOverLimit", big, [json, "Transfer-Encoding: chunked"], [...chunked(big), lastChunk]);
    }
    case "chunkedInvalid":
      return raw("chunkedInvalid", invalid, [json, "Transfer-Encoding: chunked"], [...chunked(invalid), lastChunk]);
    case "hugeLength":
      return raw("hugeLength", valid, [json, `Content-Length: ${random.between(BODY_LIMIT_BYTES + 1, 1e9)}`], [valid]);
    case "lengthAndChunked":
      return raw("lengthAndChunked", invalid, [json, `Content-Length: ${invalid.length}`, "Transfer-Encoding: chunked"], [...chunked(invalid), lastChunk], "broken");
    case "badLength": {
      const length = random.pick(["abc", "-1", `${invalid.length}, ${invalid.length + 1}`, "1 2", "+5", "0x10"]);
      return raw("badLength", invalid, [json, `Content-Length: ${length}`], [invalid], "broken");
    }
    default:
      return raw("noContentType", valid, [`Content-Length: ${valid.length}`], [valid]);
  }
}

const describeCase = (fuzzCase: Case | undefined) => (fuzzCase ? `#${fuzzCase.id} ${fuzzCase.target.operation} ${fuzzCase.kind}` : "not a fuzz case");

interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/**
 * Sends a request over its own connection and reads the first answer. A request cut off
 * by end of file half-closes the connection, and the server may then close it unanswered.
 * Resolves with null when the server neither answers nor closes.
 */
function sendRaw(port: number, bytes: Buffer, halfClose: boolean): Promise<Answer | "closed" | null> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let received = Buffer.alloc(0);
    const finish = (result: Answer | "closed" | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish(null), 10_000);
    socket.on("data", (data: Buffer) => {
      received = Buffer.concat([received, data]);
      const answer = completeResponse(received);
      if (answer) finish(answer);
    });
    // A reset after an early answer (413 before the body is read) is the server's right.
    socket.on("error", () => {});
    socket.on("close", () => finish(completeResponse(received, true) ?? "closed"));
    if (halfClose) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** The first response in `bytes` once it is all there (or, at end of stream, as much as came). */
function completeResponse(bytes: Buffer, ended = false): Answer | null {
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const [statusLine, ...lines] = bytes.subarray(0, end).toString("latin1").split("\r\n");
  const header = (name: string) => lines.find((line) => line.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
  const length = Number(header("content-length") ?? Infinity);
  if (!ended && bytes.length < end + 4 + length) return null;
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? "")?.[1]), contentType: header("content-type") ?? "", body: bytes.subarray(end + 4, end + 4 + length).toString() };
}

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

/** Every table's rows, counted and digested, to show nothing changed. */
async function snapshotTables(db: Kysely<unknown>): Promise<Record<string, { rows: number; sha256: string }>> {
  const snapshot: Record<string, { rows: number; sha256: string }> = {};
  for (const { name } of await db.introspection.getTables()) {
    const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(db);
    const lines = rows.map((row) => JSON.stringify(row)).sort();
    snapshot[name] = { rows: rows.length, sha256: createHash("sha256").update(lines.join("\n")).digest("hex") };
  }
  return snapshot;
}

async function inPool<T>(items: readonly T[], concurrency: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) await run(items[next++]!);
  }));
}

describeEachDatabase("malformed REST bodies from a generator", (kind) => {
  let core: TestCore;
  let api: Awaited<ReturnType<typeof createTestApp>>;
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

  beforeAll(async () => {
    core = await createTestCore(kind);
    api = await createTestApp(core, { bodyLimitBytes: BODY_LIMIT_BYTES });
    t = await createTenant(core.services, "Fuzz");
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
    before = await snapshotTables(core.storage.db as Kysely<unknown>);
    const startedMs = Date.now();
    await inPool(cases, CONCURRENCY, async (fuzzCase) => {
      const answer = await send(fuzzCase, port).catch((error: unknown) => ({ status: 0, contentType: "", body: `request failed: ${String(error)}` }));
      const problem = problemWith(fuzzCase, answer);
      if (problem) problems.push(`${describeCase(fuzzCase)}: ${problem}; ${typeof answer === "object" ? answer?.body.slice(0, 160) : ""}`);
    });
    await Promise.all(responses.map(({ closed }) => closed));
    serverStatuses.push(...responses.map(({ caseId, response }) => ({ request: describeCase(cases[caseId]), status: response.statusCode, wellFramed: cases[caseId]?.framing === undefined })));
    after = await snapshotTables(core.storage.db as Kysely<unknown>);
    const kinds = new Map<string, number>();
    for (const { kind: caseKind } of cases) kinds.set(caseKind, (kinds.get(caseKind) ?? 0) + 1);
    console.info(`REST fuzz [${kind}] seed ${seed}: ${cases.length} requests (${RAW_REQUESTS} over raw sockets) to ${targets.length} endpoints in ${Date.now() - startedMs} ms; ${[...kinds].map(([name, count]) => `${name} ${count}`).join(", ")}`);
  });
  afterAll(async () => {
    await api.close();
    await core.close();
  });

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

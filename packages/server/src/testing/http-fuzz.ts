import { connect } from "node:net";

// The request generator of the REST fuzz test (http/fuzz.test.ts): bodies with exactly
// one defect against an endpoint's schema, and requests that lie about their framing,
// sent over raw sockets. Seeded, so that a failing run can be replayed.

/** The body limit the fuzzed server runs with; some cases go past it. */
export const BODY_LIMIT_BYTES = 64 * 1024;

export { seededRandom, type Random } from "./random.js";
import type { Random } from "./random.js";

// JSON as the generator writes it: besides plain values, literals JSON.stringify cannot
// write (1e309) and objects with repeated keys.
export class RawJson {
  constructor(readonly text: string) {}
}
export class Entries {
  constructor(readonly entries: Array<[string, Json]>) {}
}
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json } | RawJson | Entries;

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
export interface Target {
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

export interface Case {
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

export function fetchCase(id: number, target: Target, random: Random): Case {
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

export function rawCase(id: number, target: Target, random: Random): Case {
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

export const describeCase = (fuzzCase: Case | undefined) => (fuzzCase ? `#${fuzzCase.id} ${fuzzCase.target.operation} ${fuzzCase.kind}` : "not a fuzz case");

export interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/**
 * Sends a request over its own connection and reads the first answer. A request cut off
 * by end of file half-closes the connection, and the server may then close it unanswered.
 * Resolves with null when the server neither answers nor closes.
 */
export function sendRaw(port: number, bytes: Buffer, halfClose: boolean): Promise<Answer | "closed" | null> {
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
export function completeResponse(bytes: Buffer, ended = false): Answer | null {
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const [statusLine, ...lines] = bytes.subarray(0, end).toString("latin1").split("\r\n");
  const header = (name: string) => lines.find((line) => line.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
  const length = Number(header("content-length") ?? Infinity);
  if (!ended && bytes.length < end + 4 + length) return null;
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? "")?.[1]), contentType: header("content-type") ?? "", body: bytes.subarray(end + 4, end + 4 + length).toString() };
}

import { spawn } from "node:child_process";
import { randomBytes, createHmac } from "node:crypto";
import { createSocket } from "node:dgram";
import { onTestFinished } from "vitest";
import type { Random } from "../testing/random.js";
import { Attribute, Code, HEADER_LENGTH, MESSAGE_AUTHENTICATOR_LENGTH } from "./attributes.js";
import { encodePacket, type RadiusAttribute } from "./codec.js";
import { encryptUserPassword } from "./crypto.js";
import { createRadiusServer, type AccessRequest, type RadiusServerOptions } from "./server.js";

/** Test helpers: a NAS's side of RADIUS, by hand over node:dgram or by the real radclient. */

export interface TestRequest {
  secret: Buffer;
  userName?: string;
  /** Hidden as RFC 2865 section 5.2 says; leave out for no User-Password. */
  password?: string;
  identifier?: number;
  authenticator?: Buffer;
  code?: number;
  /** Added after User-Name and User-Password. */
  attributes?: RadiusAttribute[];
  /** "first" and "last" place a correct Message-Authenticator; "none" leaves it out. @default "last" */
  messageAuthenticator?: "first" | "last" | "none";
}

/**
 * An Access-Request as a NAS sends it. Its Message-Authenticator is computed here straight
 * from RFC 3579 section 3.2, independently of crypto.ts, so tests cross-check the two.
 */
export function accessRequest(request: TestRequest): Buffer {
  const authenticator = request.authenticator ?? randomBytes(16);
  const body: RadiusAttribute[] = [];
  if (request.userName !== undefined) body.push({ type: Attribute.UserName, value: Buffer.from(request.userName, "utf8") });
  if (request.password !== undefined) body.push({ type: Attribute.UserPassword, value: encryptUserPassword(request.password, request.secret, authenticator) });
  body.push(...(request.attributes ?? []));
  const placement = request.messageAuthenticator ?? "last";
  const zeros = { type: Attribute.MessageAuthenticator, value: Buffer.alloc(MESSAGE_AUTHENTICATOR_LENGTH) };
  const attributes = placement === "first" ? [zeros, ...body] : placement === "last" ? [...body, zeros] : body;
  const bytes = encodePacket({ code: request.code ?? Code.AccessRequest, identifier: request.identifier ?? 7, authenticator, attributes });
  if (placement !== "none") {
    const valueOffset = placement === "first" ? HEADER_LENGTH + 2 : bytes.length - MESSAGE_AUTHENTICATOR_LENGTH;
    bytes.set(createHmac("md5", request.secret).update(bytes).digest(), valueOffset);
  }
  return bytes;
}

export interface TestNas {
  /** Every datagram received, in order. */
  replies: Buffer[];
  send(datagram: Buffer): Promise<void>;
  /** The next reply not yet returned, or null after timeoutMs. */
  nextReply(timeoutMs: number): Promise<Buffer | null>;
  close(): Promise<void>;
}

/** A NAS on its own UDP socket, bound to `from` (any 127.x.y.z address works on Linux loopback). */
export async function createTestNas(serverPort: number, from = "127.0.0.1"): Promise<TestNas> {
  const socket = createSocket("udp4");
  const replies: Buffer[] = [];
  let taken = 0;
  socket.on("message", (message) => replies.push(message));
  await new Promise<void>((resolve) => socket.bind(0, from, resolve));
  let closed = false;
  const close = () => {
    if (closed) return Promise.resolve();
    closed = true;
    return new Promise<void>((resolve) => socket.close(() => resolve()));
  };
  onTestFinished(close);
  return {
    replies,
    send: (datagram) => new Promise<void>((resolve, reject) => socket.send(datagram, serverPort, "127.0.0.1", (error) => (error ? reject(error) : resolve()))),
    async nextReply(timeoutMs) {
      if (!(await eventually(() => replies.length > taken, timeoutMs))) return null;
      return replies[taken++] ?? null;
    },
    close,
  };
}

export const TEST_SECRET = "testing123";

/**
 * A server on 127.0.0.1 with a free port, closed when the test finishes. Its one client is
 * 127.0.0.1 with TEST_SECRET; its authenticate accepts alice/123456, challenges "push" with an
 * empty password (and accepts it when the challenge's State comes back), rejects the rest.
 */
export async function startTestServer(overrides: Partial<RadiusServerOptions> = {}) {
  const calls: AccessRequest[] = [];
  let challenges = 0;
  const issued = new Set<string>();
  const clients = new Map([["127.0.0.1", { id: "vpn", secret: Buffer.from(TEST_SECRET) }]]);
  const server = await createRadiusServer({
    host: "127.0.0.1",
    port: 0,
    findClients: (address) => {
      const client = clients.get(address);
      return client ? [client] : [];
    },
    async authenticate(request) {
      calls.push(request);
      if (request.userName === "alice" && request.password === "123456") return { result: "accept", replyMessage: "Welcome, alice", sessionTimeoutSeconds: 3600 };
      if (request.userName === "push" && request.password === "") {
        if (request.state && issued.has(request.state.toString("hex"))) return { result: "accept", replyMessage: "Approved on your phone" };
        const state = Buffer.from(`push-${++challenges}`);
        issued.add(state.toString("hex"));
        return { result: "challenge", state, replyMessage: "Approve the login on your phone" };
      }
      return { result: "reject" };
    },
    ...overrides,
  });
  onTestFinished(() => server.close());
  return { server, port: server.address().port, calls };
}

/** Waits for a condition, polling; false once timeoutMs has passed. */
export async function eventually(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return true;
}

export interface RadclientRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs FreeRADIUS's radclient once: `-x` prints both packets, `-t 2 -r 1` waits two seconds
 * for one try. Killed after 15 seconds whatever happens.
 */
export function radclient(port: number, secret: string, attributes: string, server = "127.0.0.1"): Promise<RadclientRun> {
  return runRadclient(port, secret, "auth", attributes, server);
}

/** radclient's Status-Server (RFC 5997), with the Message-Authenticator it must carry. */
export function radclientStatus(port: number, secret: string): Promise<RadclientRun> {
  return runRadclient(port, secret, "status", "Message-Authenticator = 0x00\n");
}

function runRadclient(port: number, secret: string, command: "auth" | "status", attributes: string, server = "127.0.0.1"): Promise<RadclientRun> {
  return new Promise((resolve, reject) => {
    const child = spawn("radclient", ["-x", "-t", "2", "-r", "1", `${server}:${port}`, command, secret], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (exitCode) => {
      clearTimeout(timer);
      resolve({ exitCode, stdout, stderr });
    });
    child.stdin.end(attributes);
  });
}

/**
 * Makers of datagrams no server may answer, each from a valid signed request `valid`
 * makes (for user alice): random bytes, a request cut short, a wrong Length, an
 * attribute Length of 0, 1 or past the end, flipped bits, and well-formed packets of any
 * code that are unsigned or signed with another secret. Seeded by `random`.
 */
export function malformedDatagrams(valid: () => Buffer, random: Random): Array<(index: number) => Buffer> {
  const int = (min: number, maxExclusive: number) => min + random.int(maxExclusive - min);
  return [
    // Random bytes of any length, including none and more than 4096.
    (index) => random.bytes(index % 10 === 0 ? int(4097, 5000) : int(0, 120)),
    // A signed request cut short anywhere.
    () => {
      const bytes = valid();
      return bytes.subarray(0, int(0, bytes.length));
    },
    // A signed request whose Length field says anything else.
    () => {
      const bytes = valid();
      let length = int(0, 0x10000);
      if (length === bytes.length) length = 0;
      bytes.writeUInt16BE(length, 2);
      return bytes;
    },
    // A signed request with an attribute Length of 0, 1 or past the end.
    () => {
      const bytes = valid();
      bytes[21] = [0, 1, 200, 255][random.int(4)]!;
      return bytes;
    },
    // A signed request with one to three distinct bits flipped inside its Length.
    () => {
      const bytes = valid();
      const bits = new Set<number>();
      for (let tries = int(1, 4); tries > 0; tries--) bits.add(int(0, bytes.length * 8));
      for (const bit of bits) bytes[bit >> 3]! ^= 1 << (bit & 7);
      return bytes;
    },
    // A well-formed packet of a random code, unsigned or signed with another secret.
    () => accessRequest({ secret: random.bytes(8), userName: "alice", password: "123456", code: random.int(256), messageAuthenticator: random.int(2) ? "none" : "last" }),
  ];
}

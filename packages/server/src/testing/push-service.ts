import { execFileSync } from "node:child_process";
import { createDecipheriv, createECDH, createPublicKey, hkdfSync, randomBytes, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { IncomingHttpHeaders } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { waitableCount } from "./counter.js";

/**
 * A Web Push service of our own for tests, speaking HTTPS on loopback like the real
 * ones (FCM, Mozilla's): it hands out subscriptions whose private keys it keeps, checks
 * the VAPID authorization of every message (RFC 8292: an ES256 JWT for this origin,
 * not expired, signed by the key in `k`) and decrypts the body (RFC 8291, aes128gcm),
 * as the browser on the device would. Its certificate is made for the run by openssl;
 * pass `ca` to whatever sends to it.
 */
export interface ReceivedPush {
  subscriptionId: string;
  headers: IncomingHttpHeaders;
  vapid: { publicKey: string; claims: { aud: string; exp: number; sub: string } };
  payload: Record<string, unknown>;
}

const b64url = (bytes: Buffer) => bytes.toString("base64url");

function makeCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "tessera-push-cert-"));
  try {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
      "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
    ], { stdio: "ignore" });
    return { key: readFileSync(path.join(dir, "key.pem"), "utf8"), cert: readFileSync(path.join(dir, "cert.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** RFC 8292 section 3: `vapid t=<JWT>, k=<public key>`; the JWT must verify under k. */
function checkVapid(authorization: string | undefined, origin: string): ReceivedPush["vapid"] {
  const match = /^vapid t=([\w-]+\.[\w-]+\.[\w-]+), k=([\w-]+)$/.exec(authorization ?? "");
  if (!match) throw new Error(`no VAPID authorization: ${authorization}`);
  const [header, claims, signature] = match[1]!.split(".") as [string, string, string];
  const point = Buffer.from(match[2]!, "base64url");
  if (point.length !== 65 || point[0] !== 4) throw new Error("k is not an uncompressed P-256 point");
  const key = createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) }, format: "jwk" });
  if (JSON.parse(Buffer.from(header, "base64url").toString()).alg !== "ES256") throw new Error("JWT is not ES256");
  if (!verify("sha256", Buffer.from(`${header}.${claims}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(signature, "base64url"))) throw new Error("VAPID signature does not verify");
  const parsed = JSON.parse(Buffer.from(claims, "base64url").toString()) as ReceivedPush["vapid"]["claims"];
  const nowSeconds = Date.now() / 1000;
  if (parsed.aud !== origin) throw new Error(`JWT audience ${parsed.aud} is not ${origin}`);
  if (!(parsed.exp > nowSeconds && parsed.exp <= nowSeconds + 24 * 3600)) throw new Error("JWT expiry is not within 24 hours");
  return { publicKey: match[2]!, claims: parsed };
}

/** RFC 8291 section 3.4 and RFC 8188: decrypts one aes128gcm record with the subscriber's keys. */
function decrypt(body: Buffer, subscriber: { ecdh: ReturnType<typeof createECDH>; auth: Buffer }): Buffer {
  const salt = body.subarray(0, 16);
  const idLength = body[20]!;
  const senderPublic = body.subarray(21, 21 + idLength);
  const ciphertext = body.subarray(21 + idLength);
  const shared = subscriber.ecdh.computeSecret(senderPublic);
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), subscriber.ecdh.getPublicKey(), senderPublic]);
  const ikm = Buffer.from(hkdfSync("sha256", shared, subscriber.auth, keyInfo, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 0x02 and zero or more zero bytes of padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end -= 1;
  if (padded[end] !== 2) throw new Error("no last-record delimiter");
  return padded.subarray(0, end);
}

export async function startTestPushService() {
  const { key, cert } = makeCertificate();
  const subscribers = new Map<string, { ecdh: ReturnType<typeof createECDH>; auth: Buffer; status: number }>();
  const received: ReceivedPush[] = [];
  const rejected: string[] = [];
  let origin = "";
  let handled = 0;
  const answered = waitableCount("push service requests", () => handled);

  const server = createServer({ key, cert }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      response.on("finish", () => {
        handled += 1;
        answered.changed();
      });
      const id = /^\/push\/([\w-]+)$/.exec(request.url ?? "")?.[1];
      const subscriber = id ? subscribers.get(id) : undefined;
      if (request.method !== "POST" || !id || !subscriber) {
        response.writeHead(404).end();
        return;
      }
      if (subscriber.status !== 201) {
        response.writeHead(subscriber.status).end();
        return;
      }
      try {
        if (request.headers["content-encoding"] !== "aes128gcm") throw new Error(`content-encoding ${request.headers["content-encoding"]}`);
        if (!/^\d+$/.test(String(request.headers.ttl))) throw new Error("no TTL header");
        const vapid = checkVapid(request.headers.authorization, origin);
        const payload = JSON.parse(decrypt(Buffer.concat(chunks), subscriber).toString("utf8")) as Record<string, unknown>;
        received.push({ subscriptionId: id, headers: request.headers, vapid, payload });
        response.writeHead(201, { location: `${origin}/message/${randomBytes(8).toString("hex")}` }).end();
      } catch (error) {
        rejected.push((error as Error).message);
        response.writeHead(400).end((error as Error).message);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    origin,
    /** The certificate to trust when sending here. */
    ca: cert,
    received,
    /** Messages refused for a bad authorization or undecryptable body, with the reason. */
    rejected,
    /** A new subscription, as a browser's PushSubscription.toJSON() gives it. */
    subscribe() {
      const id = randomBytes(9).toString("base64url");
      const ecdh = createECDH("prime256v1");
      ecdh.generateKeys();
      const auth = randomBytes(16);
      subscribers.set(id, { ecdh, auth, status: 201 });
      return { id, subscription: { endpoint: `${origin}/push/${id}`, expirationTime: null, keys: { p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) } } };
    },
    /** From now on, messages to this subscription get `status` (410: the user unsubscribed). */
    answerWith(id: string, status: number) {
      subscribers.get(id)!.status = status;
    },
    /** Requests answered so far, whatever the answer. */
    get handled() {
      return handled;
    },
    /** Resolves once `count` requests have been answered (accepted, refused or gone), or fails after `timeoutMs`. */
    waitFor: (count: number, timeoutMs = 5000) => answered.reach(count, timeoutMs),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

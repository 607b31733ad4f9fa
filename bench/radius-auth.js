// RADIUS PAP+TOTP authenticate throughput and p99 latency: Tessera's RADIUS server against
// FreeRADIUS 3.2 with rlm_totp (Debian's freeradius package), each answering the same load
// from the same generator over loopback. Target (from the issue): Tessera answers at least
// as many requests per second as FreeRADIUS at the same concurrency (64 outstanding), with
// a p99 no worse, although FreeRADIUS neither refuses replays nor audits and Tessera does both.
//
//   node bench/radius-auth.js [--users 50000] [--requests 100000] [--outstanding 64] [--profile=DIR] [--pg]
//
// Tessera on SQLite by default; --pg (or BENCH_DATABASE_URL, an admin connection) runs it
// on a PostgreSQL database made for the run and dropped after it.
//
// Three processes, one server at a time: this one seeds Tessera's database, writes
// FreeRADIUS's configuration and starts and stops the servers; the server under test; and
// the load generator, this same file forked with --generator, so that building and checking
// packets shares no event loop with anything else (on 2 cores: one for the server, one for
// the generator).
//
// A third server answers the same load after them: Tessera's RADIUS layer alone (this file
// forked with --layer-server: the product's RADIUS server deciding accept without any
// login). Not a target; it shows what the protocol on node:dgram costs before a passcode is
// looked at, against what FreeRADIUS spends on a whole request.
import { execFileSync, fork, spawn, spawnSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { encodeBase32, totp } from "../packages/otp/dist/index.js";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { Attribute, Code, HEADER_LENGTH, MESSAGE_AUTHENTICATOR_LENGTH } from "../packages/server/dist/radius/attributes.js";
import { encodePacket } from "../packages/server/dist/radius/codec.js";
import { encryptUserPassword, responseAuthenticator } from "../packages/server/dist/radius/crypto.js";
import { createRadiusServer } from "../packages/server/dist/radius/server.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import { benchMasterKey, benchPostgresUrl, cleanUpOnInterrupt, createBenchDatabase, fmt, intFlag, loadAverage, parseFlags, percentiles, printHeader, printTable, processCpuMs, removeDir, reportResult, seedUsersWithTokens, serveTaskAsChild, startTesseraServe, taskInChild, tempDir } from "./lib.js";

const benchFile = fileURLToPath(import.meta.url);
const FREERADIUS_BIN = "/usr/sbin/freeradius";
const RLM_TOTP = "/usr/lib/freeradius/rlm_totp.so";

/** Every token: TOTP, SHA1, 6 digits, 30 s steps (RFC 6238's defaults, and all rlm_totp 3.2.1 knows). */
const PERIOD_MS = 30_000;
const DIGITS = 6;
/** Requests before the timed ones, so that both servers are warm (JIT, caches, thread pool). */
const WARMUP_REQUESTS = 5_000;
/** A request unanswered this long is lost; the generator never retransmits. */
const TIMEOUT_MS = 5_000;
/**
 * Tessera accepts the step before the current one; a code for it sent this close to a step
 * change could arrive after it, two steps old. The generator sends a later step then.
 */
const STEP_GUARD_MS = 1_000;

const seedOf = (/** @type {number} */ i) => createHash("sha1").update(`bench-seed-${i}`).digest();
const userName = (/** @type {number} */ i) => `user${i}`;
const stepAt = (/** @type {number} */ atMs) => Math.floor(atMs / PERIOD_MS);

/** The processes this one started and that still run, to stop them if it is interrupted. */
const children = new Set();
/**
 * @template {import("node:child_process").ChildProcess} T
 * @param {T} child
 * @returns {T}
 */
function tracked(child) {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** How long a server may take to start listening. */
const START_TIMEOUT_MS = 60_000;

/**
 * RFC 6238: HOTP (RFC 4226 section 5.3) over the step, on node:crypto's HMAC directly: a
 * third cheaper than the product's `hotp` (through otpauth), and the generator's own cost
 * weighs on every FreeRADIUS figure. The two are compared once before any load.
 * @param {Buffer} key
 * @param {number} step
 */
function totpCode(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const digest = createHmac("sha1", key).update(counter).digest();
  const offset = /** @type {number} */ (digest[digest.length - 1]) & 0x0f;
  return String((digest.readUInt32BE(offset) & 0x7fffffff) % 10 ** DIGITS).padStart(DIGITS, "0");
}

/**
 * An Access-Request as a NAS sends it (RFC 2865 section 4.1): Message-Authenticator first, as
 * the BlastRADIUS advisory asks, then User-Name, the PAP User-Password hidden with the
 * Request Authenticator (section 5.2) and NAS-IP-Address. The packet codec and the password
 * hiding are the product's; FreeRADIUS accepting these packets checks them independently.
 * @param {{ identifier: number, authenticator: Buffer, userName: string, password: string, secret: Buffer }} request
 */
function accessRequest({ identifier, authenticator, userName, password, secret }) {
  const bytes = encodePacket({
    code: Code.AccessRequest,
    identifier,
    authenticator,
    attributes: [
      { type: Attribute.MessageAuthenticator, value: Buffer.alloc(MESSAGE_AUTHENTICATOR_LENGTH) },
      { type: Attribute.UserName, value: Buffer.from(userName, "utf8") },
      { type: Attribute.UserPassword, value: encryptUserPassword(password, secret, authenticator) },
      { type: Attribute.NasIpAddress, value: Buffer.from([127, 0, 0, 1]) },
    ],
  });
  // RFC 3579 section 3.2: HMAC-MD5 keyed by the secret over the packet with the value zeroed.
  bytes.set(createHmac("md5", secret).update(bytes).digest(), HEADER_LENGTH + 2);
  return bytes;
}

/**
 * The response's code when its Response Authenticator is right (RFC 2865 section 3), else null.
 * @param {Buffer} response
 * @param {Buffer} requestAuthenticator
 * @param {Buffer} secret
 */
function checkedCode(response, requestAuthenticator, secret) {
  if (response.length < HEADER_LENGTH || response.readUInt16BE(2) > response.length) return null;
  const expected = responseAuthenticator(response.subarray(0, response.readUInt16BE(2)), requestAuthenticator, secret);
  return expected.equals(response.subarray(4, HEADER_LENGTH)) ? response[0] : null;
}

/**
 * Which step to send a user a code for, or null when the user has no fresh code now. Both
 * servers get the same users in the same order; the step follows what each accepts.
 * @typedef {(user: { lastStep: number, driftSteps: number }, nowMs: number) => number | null} StepRule
 * @type {Record<"tessera" | "freeradius", StepRule>}
 */
const stepRules = {
  // Tessera (modules/auth/verify.ts): one step each way around the step the token last
  // drifted to, never a step at or before the last accepted one. Of the codes for t-1, t
  // and t+1, the earliest still fresh: t-1 first, then t, then t+1.
  tessera(user, nowMs) {
    const now = stepAt(nowMs);
    const earliest = Math.max(user.lastStep + 1, stepAt(nowMs + STEP_GUARD_MS) - 1, now + user.driftSteps - 1);
    const latest = Math.min(now + 1, now + user.driftSteps + 1);
    return earliest <= latest ? earliest : null;
  },
  // rlm_totp 3.2.1 checks the current step only (no look-back, no look-ahead) and keeps no
  // state, so every request carries the current code, a replay as often as not.
  freeradius: (_user, nowMs) => stepAt(nowMs),
};

/**
 * @typedef {object} LoadOptions
 * @property {"tessera" | "freeradius"} target which step rule the codes follow
 * @property {number} port the server's UDP port on 127.0.0.1
 * @property {string} secret the RADIUS shared secret
 * @property {number} users users user0..user{users-1}, taken in turn
 * @property {number} warmup untimed requests first
 * @property {number} requests timed requests after them
 * @property {number} outstanding requests kept in flight
 */

/**
 * @typedef {object} LoadResult
 * @property {number} requestsPerSecond timed requests answered, over the time from the first one's send to the last answer
 * @property {ReturnType<typeof percentiles>} latency of the timed requests answered, in ms
 * @property {number} seconds
 * @property {number} accepted every request, warm-up included
 * @property {number} rejected
 * @property {number} rejectedAcrossStepChange rejects whose answer came in a later 30 s step than the request left
 * @property {number} timedOut
 * @property {number} unmatchedAnswers answers to no request in flight (late ones, after a timeout) or with a wrong Response Authenticator
 * @property {number} skippedUsers users passed over for having no fresh code
 * @property {number} generatorCpuPercent the generator's CPU time over the timed run's wall time
 */

/**
 * The load generator (the child process): keeps `outstanding` requests in flight, each slot
 * a RADIUS Identifier on one of its sockets, and sends the next request as soon as one is
 * answered or times out.
 * @param {LoadOptions} options
 * @returns {Promise<LoadResult>}
 */
async function generateLoad(options) {
  const { port, users, warmup, requests, outstanding } = options;
  const secret = Buffer.from(options.secret, "utf8");
  const nextStep = stepRules[options.target];
  const total = warmup + requests;
  const keys = Array.from({ length: users }, (_, i) => seedOf(i));
  const userState = Array.from({ length: users }, () => ({ lastStep: -Infinity, driftSteps: 0 }));

  // 256 Identifiers a socket (RFC 2865 section 3: one octet). Sixteen times as many as
  // requests in flight, reused oldest first: a server may still hold a request it has
  // answered (FreeRADIUS logged "conflicting packet ... unfinished request" with only twice
  // as many, its worker descheduled between sending the answer and finishing).
  const socketCount = Math.ceil((16 * outstanding) / 256);
  const sockets = await Promise.all(
    Array.from({ length: socketCount }, async () => {
      const socket = createSocket("udp4");
      await new Promise((resolve) => socket.bind(0, "127.0.0.1", () => resolve(undefined)));
      // Connected: no address to resolve on every send, and datagrams from anyone else are not read.
      await new Promise((resolve) => socket.connect(port, "127.0.0.1", () => resolve(undefined)));
      return socket;
    }),
  );
  /** @type {Array<{ index: number, authenticator: Buffer, sentAt: bigint, sentAtMs: number } | undefined>} */
  const inFlight = new Array(socketCount * 256);
  const freeSlots = Array.from({ length: socketCount * 256 }, (_, slot) => slot);
  const latenciesMs = new Float64Array(requests).fill(NaN);
  const counts = { accepted: 0, rejected: 0, rejectedAcrossStepChange: 0, timedOut: 0, unmatchedAnswers: 0, skippedUsers: 0 };
  let sent = 0;
  let done = 0;
  let nextUser = 0;
  let timedFrom = 0n;
  let lastAnswerAt = 0n;
  let cpuAtStart = process.cpuUsage();

  /** @type {(result: LoadResult) => void} */
  let finish = () => undefined;
  /** @type {(error: Error) => void} */
  let fail = () => undefined;
  const finished = new Promise((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });

  // Request Authenticators (RFC 2865 section 3: unpredictable) cut from a fresh block of
  // random bytes every 4,096 requests: one call to the CSPRNG per request showed in the profile.
  let randomBlock = Buffer.alloc(0);
  let randomOffset = 0;
  function nextAuthenticator() {
    if (randomOffset === randomBlock.length) {
      randomBlock = randomBytes(16 * 4096);
      randomOffset = 0;
    }
    randomOffset += 16;
    return randomBlock.subarray(randomOffset - 16, randomOffset);
  }

  function sendNext() {
    if (sent === total) return;
    const nowMs = Date.now();
    let user = -1;
    let step = null;
    // Users in turn: a user's requests are `users` requests apart, never in flight together.
    for (let tried = 0; step === null; tried++) {
      if (tried === users) throw new Error(`no user has a fresh code; raise --users (now ${users})`);
      user = nextUser++ % users;
      step = nextStep(/** @type {{ lastStep: number, driftSteps: number }} */ (userState[user]), nowMs);
      if (step === null) counts.skippedUsers++;
    }
    // Counted as used when sent: a request lost on the way may still have been accepted.
    const state = /** @type {{ lastStep: number, driftSteps: number }} */ (userState[user]);
    state.lastStep = step;
    state.driftSteps = step - stepAt(nowMs);

    const slot = /** @type {number} */ (freeSlots.shift());
    const authenticator = nextAuthenticator();
    const packet = accessRequest({ identifier: slot % 256, authenticator, userName: userName(user), password: totpCode(/** @type {Buffer} */ (keys[user]), step), secret });
    const index = sent++;
    const sentAt = process.hrtime.bigint();
    if (index === warmup) {
      timedFrom = sentAt;
      cpuAtStart = process.cpuUsage();
    }
    inFlight[slot] = { index, authenticator, sentAt, sentAtMs: nowMs };
    /** @type {import("node:dgram").Socket} */ (sockets[Math.floor(slot / 256)]).send(packet);
  }

  /** @param {number} slot */
  function complete(slot) {
    inFlight[slot] = undefined;
    freeSlots.push(slot);
    done++;
    if (done < total) {
      try {
        sendNext();
      } catch (error) {
        fail(/** @type {Error} */ (error));
      }
      return;
    }
    const cpu = process.cpuUsage(cpuAtStart);
    const elapsedMs = Number(lastAnswerAt - timedFrom) / 1e6;
    const answered = Array.from(latenciesMs).filter((ms) => !Number.isNaN(ms));
    finish({
      requestsPerSecond: answered.length / (elapsedMs / 1000),
      latency: percentiles(answered),
      seconds: elapsedMs / 1000,
      ...counts,
      generatorCpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
    });
  }

  sockets.forEach((socket, socketIndex) => {
    socket.on("message", (response) => {
      const at = process.hrtime.bigint();
      const slot = socketIndex * 256 + /** @type {number} */ (response[1]);
      const request = inFlight[slot];
      const code = request ? checkedCode(response, request.authenticator, secret) : null;
      if (!request || code === null) {
        counts.unmatchedAnswers++;
        return;
      }
      lastAnswerAt = at;
      if (request.index >= warmup) latenciesMs[request.index - warmup] = Number(at - request.sentAt) / 1e6;
      if (code === Code.AccessAccept) counts.accepted++;
      else {
        counts.rejected++;
        if (stepAt(Date.now()) !== stepAt(request.sentAtMs)) counts.rejectedAcrossStepChange++;
      }
      complete(slot);
    });
  });
  // One sweep for every request in flight, rather than a timer for each.
  const sweeper = setInterval(() => {
    const oldest = process.hrtime.bigint() - BigInt(TIMEOUT_MS) * 1_000_000n;
    inFlight.forEach((request, slot) => {
      if (!request || request.sentAt > oldest) return;
      counts.timedOut++;
      lastAnswerAt = process.hrtime.bigint();
      complete(slot);
    });
  }, 250);

  try {
    for (let i = 0; i < Math.min(outstanding, total); i++) sendNext();
    return await finished;
  } finally {
    clearInterval(sweeper);
    for (const socket of sockets) socket.close();
  }
}

/**
 * Runs the generator in its own process.
 * @param {LoadOptions} options
 * @returns {Promise<LoadResult>}
 */
function runGenerator(options) {
  const child = tracked(fork(benchFile, ["--generator"], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  return taskInChild(child, "load generator", options);
}

/**
 * One request, for the checks before measuring.
 * @param {{ port: number, secret: string, userName: string, password: string }} request
 * @returns {Promise<"accept" | "reject" | "no answer">}
 */
async function askOnce({ port, secret, userName, password }) {
  const socket = createSocket("udp4");
  const authenticator = randomBytes(16);
  const secretBytes = Buffer.from(secret, "utf8");
  try {
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve("no answer"), 3_000);
      socket.on("message", (response) => {
        clearTimeout(timer);
        const code = checkedCode(response, authenticator, secretBytes);
        resolve(code === Code.AccessAccept ? "accept" : code === Code.AccessReject ? "reject" : "no answer");
      });
      socket.send(accessRequest({ identifier: 1, authenticator, userName, password, secret: secretBytes }), port, "127.0.0.1");
    });
  } finally {
    socket.close();
  }
}

/**
 * Before measuring, a server must accept the probe user's current code and reject a wrong one.
 * The probe user is not among the load's users, so its codes are never spent twice.
 * @param {string} name
 * @param {{ port: number, secret: string, probeUser: number }} target
 */
async function checkServerAnswers(name, { port, secret, probeUser }) {
  // rlm_totp takes the current step only: do not send a code that a step change could outdate.
  const msLeftInStep = PERIOD_MS - (Date.now() % PERIOD_MS);
  if (msLeftInStep < 2_000) await sleep(msLeftInStep + 50);
  const good = totpCode(seedOf(probeUser), stepAt(Date.now()));
  const wrong = String((Number(good) + 1) % 10 ** DIGITS).padStart(DIGITS, "0");
  const answers = [await askOnce({ port, secret, userName: userName(probeUser), password: good }), await askOnce({ port, secret, userName: userName(probeUser), password: wrong })];
  if (answers[0] !== "accept" || answers[1] !== "reject") {
    throw new Error(`${name} answered ${answers[0]} to a valid code and ${answers[1]} to a wrong one; expected accept and reject`);
  }
}

/** Installs Debian's freeradius (which has rlm_totp) when it is missing; we run as root. */
function ensureFreeradius() {
  // `dpkg -s` also succeeds for a package removed with its configuration files kept.
  const installed = spawnSync("dpkg-query", ["-W", "-f=${Status}", "freeradius"], { encoding: "utf8" }).stdout === "install ok installed";
  if (!installed) {
    console.log("installing Debian's freeradius package (apt-get install -y -qq freeradius) ...");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const install = () => spawnSync("apt-get", ["install", "-y", "-qq", "freeradius"], { stdio: ["ignore", "ignore", "inherit"], env }).status === 0;
    // A machine that never ran `apt-get update` has no package lists yet.
    if (!install() && !(spawnSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env }).status === 0 && install())) {
      throw new Error("FreeRADIUS is missing and `apt-get install -y freeradius` failed; install it (as root) and run again");
    }
    // Where the package's own service starts (systemd, no policy-rc.d), it would hold 1812
    // with the stock configuration; the benchmark runs its own server on its own port.
    spawnSync("systemctl", ["disable", "--now", "freeradius"], { stdio: "ignore" });
    spawnSync("service", ["freeradius", "stop"], { stdio: "ignore" });
  }
  if (!existsSync(FREERADIUS_BIN) || !existsSync(RLM_TOTP)) throw new Error(`FreeRADIUS is installed but ${FREERADIUS_BIN} or ${RLM_TOTP} is missing`);
  return /** @type {string} */ (execFileSync(FREERADIUS_BIN, ["-v"], { encoding: "utf8" }).split("\n")[0]).replace(/^radiusd: /, "");
}

/**
 * Seeds Tessera's database: users user0..user{count-1}, each with an active TOTP token,
 * and the RADIUS application the load comes through.
 * @param {import("../packages/server/dist/storage/database.js").DatabaseTarget} target
 * @param {number} count
 * @returns {Promise<{ radiusSecret: string }>}
 */
async function seedTessera(target, count) {
  const storage = openStorage(target);
  try {
    await migrateToLatest(storage);
    const services = createServices(storage, createKeyring([benchMasterKey]));
    const vsId = await seedUsersWithTokens(services, { count, otpMode: "totp", digits: DIGITS, periodSeconds: PERIOD_MS / 1000, seedOf });
    // No radiusSecret given: Tessera makes one and shows it this once.
    const app = await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "bench-nas", kind: "radius", radiusAddresses: ["127.0.0.1"] });
    // Push OTP is off unless asked for (and a 6-digit code is a passcode either way): checked, not assumed.
    if (app.pushOtp) throw new Error("the RADIUS application has Push OTP on; the benchmark measures typed passcodes");
    return { radiusSecret: /** @type {string} */ (app.radiusSecret) };
  } finally {
    await storage.close();
  }
}

/**
 * Tessera's RADIUS layer alone, in a process of its own: the product's RADIUS server
 * (`createRadiusServer`: decode, the client by address, Message-Authenticator, the
 * duplicate cache, PAP, the signed answer with Message-Authenticator first, the send) with
 * a decision that is always accept, made without any login. Not a server anyone could
 * run: it tells what the protocol layer on node:dgram costs before a passcode is looked
 * at, the floor under every Tessera figure above it.
 * @param {string} secret
 */
async function serveLayerOnly(secret) {
  const client = { id: "bench", secret: Buffer.from(secret, "utf8") };
  const server = await createRadiusServer({
    host: "127.0.0.1",
    port: 0,
    findClients: () => [client],
    authenticate: async () => ({ result: "accept" }),
  });
  const end = () => void server.close().then(() => process.exit(0));
  process.once("disconnect", end);
  process.once("SIGTERM", end);
  process.send?.({ port: server.address().port });
}

/**
 * Starts the RADIUS layer alone (this file forked with --layer-server).
 * @param {string} secret
 * @param {string | undefined} profileDir where its CPU profile goes, beside the Tessera server's
 * @returns {Promise<{ port: number, child: import("node:child_process").ChildProcess }>}
 */
async function startLayerOnly(secret, profileDir) {
  const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, "--cpu-prof-name=radius-layer-alone.cpuprofile"] : [];
  const child = tracked(fork(benchFile, ["--layer-server"], { execArgv: profile, stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  try {
    const port = await new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`the RADIUS layer did not listen within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      child.once("message", (/** @type {{ port: number }} */ message) => resolve(message.port));
      child.once("exit", (code) => reject(new Error(`the RADIUS layer's process exited with ${code}`)));
      child.send({ secret });
    });
    return { port: /** @type {number} */ (port), child };
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts `tessera serve` with RADIUS on a free loopback port (HTTP on a free port too), on
 * the SQLite file in `dir` or the PostgreSQL database of `target`.
 * @param {string} dir
 * @param {import("../packages/server/dist/storage/database.js").DatabaseTarget} target
 * @param {string | undefined} profileDir
 * @returns {Promise<{ port: number, child: import("node:child_process").ChildProcess }>}
 */
async function startTessera(dir, target, profileDir) {
  const started = await startTesseraServe({
    dir,
    profileDir,
    env: { TESSERA_RADIUS_HOST: "127.0.0.1", TESSERA_RADIUS_PORT: "0", ...(target.kind === "postgres" ? { DATABASE_URL: target.url } : {}) },
    // Problems only (a dropped datagram is logged at most every 10 s), as FreeRADIUS here.
    logLevel: "warn",
    timeoutMs: START_TIMEOUT_MS,
    onLine: (line) => {
      if (!/admin API|database/.test(line)) console.log(`tessera: ${line}`);
    },
  });
  return { port: /** @type {number} */ (started.radiusPort), child: tracked(started.child) };
}

/**
 * FreeRADIUS's thread pool: a fixed 4 workers behind its one receive thread, none started
 * or stopped during the run. On 2 cores, one of them the generator's, 4 was the fastest of
 * 2, 4, 8 and 16 (bench/README.md); more only wait to be scheduled.
 */
const FREERADIUS_THREADS = 4;

/**
 * A FreeRADIUS configuration of its own in `dir`, written from scratch (not a copy of
 * /etc/freeradius/3.0, so that nothing of the machine's setup leaks in): one client, one
 * listener, rlm_files for the users' TOTP-Secret and rlm_totp to check the PAP password.
 * @param {{ dir: string, port: number, secret: string, users: number }} options
 */
function writeFreeradiusConfig({ dir, port, secret, users }) {
  mkdirSync(path.join(dir, "run"));
  // rlm_files: `name check-items` per user. TOTP-Secret is base32 (dictionary.freeradius.internal:
  // "TOTP-Secret string # base32 encoded"); := puts both items in the control list.
  const lines = Array.from({ length: users }, (_, i) => `${userName(i)} Auth-Type := totp, TOTP-Secret := "${encodeBase32(seedOf(i))}"`);
  writeFileSync(path.join(dir, "users"), lines.join("\n") + "\n");
  writeFileSync(
    path.join(dir, "radiusd.conf"),
    `# Written by bench/radius-auth.js; removed with its directory.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
libdir = /usr/lib/freeradius
raddbdir = ${dir}
confdir = ${dir}
modconfdir = ${dir}
logdir = ${dir}
radacctdir = ${dir}
db_dir = ${dir}
run_dir = ${dir}/run
pidfile = ${dir}/run/radiusd.pid
name = radiusd
hostname_lookups = no
max_request_time = 30
# Answers are kept this long for retransmissions (the default). max_requests counts those
# too, so it must cover cleanup_delay seconds at the highest rate: 262,144 is 50,000 req/s.
cleanup_delay = 5
max_requests = 262144
proxy_requests = no

log {
  destination = stdout
  auth = no
}

security {
  allow_core_dumps = no
  max_attributes = 200
  # The default 1 s delay of Access-Reject would only slow the wrong-code check before the load.
  reject_delay = 0
  status_server = no
}

thread pool {
  start_servers = ${FREERADIUS_THREADS}
  max_servers = ${FREERADIUS_THREADS}
  min_spare_servers = 1
  max_spare_servers = ${FREERADIUS_THREADS}
  max_requests_per_server = 0
}

client bench {
  ipaddr = 127.0.0.1
  secret = ${secret}
  # As Tessera: an Access-Request without a valid Message-Authenticator is dropped.
  require_message_authenticator = yes
}

modules {
  files {
    filename = ${dir}/users
  }
  totp {
  }
}

server default {
  listen {
    type = auth
    ipaddr = 127.0.0.1
    port = ${port}
  }
  authorize {
    files
    # rlm_totp 3.2.1 reads the code from TOTP-Password; PAP delivers it as User-Password.
    update request {
      &TOTP-Password := &User-Password
    }
  }
  authenticate {
    Auth-Type totp {
      totp
    }
  }
}
`,
  );
}

/** A UDP port free on 127.0.0.1 now (FreeRADIUS cannot be told to pick one and say which). */
async function freeUdpPort() {
  const socket = createSocket("udp4");
  await new Promise((resolve) => socket.bind(0, "127.0.0.1", () => resolve(undefined)));
  const { port } = socket.address();
  await new Promise((resolve) => socket.close(() => resolve(undefined)));
  return port;
}

/**
 * Runs FreeRADIUS in the foreground (-f) on the configuration in `dir`, without debug output.
 * @param {string} dir
 * @returns {Promise<import("node:child_process").ChildProcess>}
 */
function startFreeradius(dir) {
  const child = tracked(spawn(FREERADIUS_BIN, ["-f", "-d", dir, "-n", "radiusd"], { stdio: ["ignore", "pipe", "pipe"] }));
  /** @type {string[]} */
  const output = [];
  let ready = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`freeradius did not start within ${START_TIMEOUT_MS / 1000} s:\n${output.join("\n")}`)), START_TIMEOUT_MS);
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        // Once it is ready, what it logs beyond Info (its own stop) is a problem worth seeing.
        if (ready) return / : Info: /.test(line) ? undefined : console.log(`freeradius: ${line}`);
        output.push(line);
        if (!line.includes("Ready to process requests")) return;
        ready = true;
        clearTimeout(timer);
        resolve(child);
      });
    }
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`freeradius exited with ${code}:\n${output.join("\n")}`));
    });
  });
}

/**
 * Stops a server and waits for it to be gone.
 * @param {import("node:child_process").ChildProcess | undefined} child
 */
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  if ((await Promise.race([exited, sleep(10_000).then(() => "late")])) === "late") {
    child.kill("SIGKILL");
    await exited;
  }
}

/** @param {LoadResult} result */
function lossesOf(result) {
  return `${fmt(result.rejected)} / ${fmt(result.timedOut)}`;
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const userCount = intFlag(flags, "users", 50_000);
  const requests = intFlag(flags, "requests", 100_000);
  const outstanding = intFlag(flags, "outstanding", 64);
  /** `--profile=DIR` writes the Tessera server's CPU profile (.cpuprofile) there, and the RADIUS layer's alone. */
  const profileDir = typeof flags.profile === "string" ? path.resolve(flags.profile) : undefined;
  if (outstanding > userCount) throw new Error(`--outstanding ${outstanding} needs at least as many --users: one request in flight per user`);
  // Tessera takes each user's codes for t-1, t and t+1 once: three a user within a step.
  if (3 * userCount < WARMUP_REQUESTS + requests) throw new Error(`${fmt(WARMUP_REQUESTS + requests)} requests need at least ${fmt(Math.ceil((WARMUP_REQUESTS + requests) / 3))} --users (three fresh codes each)`);

  const freeradiusVersion = ensureFreeradius();
  // The machine is shared: its load says how much the figures can be trusted.
  const machineInfo = printHeader("radius-auth", { FreeRADIUS: freeradiusVersion, "load average (1, 5, 15 min) at start": loadAverage() });
  // The generator's TOTP against the product's (and so the servers') before any load.
  const probeAtMs = Date.now();
  if (totpCode(seedOf(0), stepAt(probeAtMs)) !== totp(seedOf(0), { atMs: probeAtMs, periodSeconds: PERIOD_MS / 1000, digits: DIGITS, algorithm: "SHA1" })) {
    throw new Error("the generator's TOTP differs from packages/otp's");
  }

  const dir = tempDir("radius-auth");
  const freeradiusDir = path.join(dir, "freeradius");
  mkdirSync(freeradiusDir);
  const database = await createBenchDatabase({ label: "radius-auth", postgresUrl: benchPostgresUrl(flags) });
  // Tessera's data directory: on SQLite the one holding its file, where `tessera serve` finds it.
  const tesseraDir = database.target.kind === "sqlite" ? path.dirname(database.target.file) : path.join(dir, "tessera");
  mkdirSync(tesseraDir, { recursive: true });
  /** @type {import("node:child_process").ChildProcess | undefined} */
  let server;
  // SIGKILL: nothing of theirs is worth keeping, and FreeRADIUS 3.2.1 can hang in its
  // shutdown when SIGTERM finds requests in flight (seen here).
  const stopWatching = cleanUpOnInterrupt(children, dir, "SIGKILL");
  try {
    // One more user than the load takes: the probe of checkServerAnswers.
    const probeUser = userCount;
    const seedStarted = Date.now();
    const { radiusSecret } = await seedTessera(database.target, userCount + 1);
    const freeradiusPort = await freeUdpPort();
    writeFreeradiusConfig({ dir: freeradiusDir, port: freeradiusPort, secret: radiusSecret, users: userCount + 1 });
    console.log(`seeded in ${fmt((Date.now() - seedStarted) / 1000, 1)} s (not measured)`);
    console.log(
      `inputs: ${fmt(userCount)} users with TOTP tokens (SHA1, 6 digits, 30 s), ${fmt(WARMUP_REQUESTS)} warm-up + ${fmt(requests)} timed Access-Requests ` +
        `(PAP, Message-Authenticator) a server, ${outstanding} outstanding, over loopback; Tessera on ${database.describe}; FreeRADIUS with ${FREERADIUS_THREADS} worker threads`,
    );
    const load = { users: userCount, warmup: WARMUP_REQUESTS, requests, outstanding, secret: radiusSecret };
    /**
     * Checks a running server's answers, loads it, and adds what the load cost it.
     * @param {LoadOptions["target"]} target
     * @param {import("node:child_process").ChildProcess} child
     * @param {number} port
     * @param {{ checkAnswers?: boolean }} [options] false for the layer alone, which accepts anything
     */
    const measure = async (target, child, port, { checkAnswers = true } = {}) => {
      if (checkAnswers) await checkServerAnswers(target === "tessera" ? "Tessera" : "FreeRADIUS", { port, secret: radiusSecret, probeUser });
      const pid = /** @type {number} */ (child.pid);
      const cpuBeforeMs = processCpuMs(pid);
      const result = await runGenerator({ ...load, target, port });
      return { ...result, serverCpuUsPerRequest: ((processCpuMs(pid) - cpuBeforeMs) * 1000) / (load.warmup + load.requests) };
    };

    server = await startFreeradius(freeradiusDir);
    const baseline = await measure("freeradius", server, freeradiusPort);
    await stop(server);

    const tessera = await startTessera(tesseraDir, database.target, profileDir);
    server = tessera.child;
    const measured = await measure("tessera", server, tessera.port);
    await stop(server);

    const layer = await startLayerOnly(radiusSecret, profileDir);
    server = layer.child;
    const layerOnly = await measure("tessera", server, layer.port, { checkAnswers: false });
    await stop(server);

    const throughputRatio = measured.requestsPerSecond / baseline.requestsPerSecond;
    const p99Ratio = measured.latency.p99 / baseline.latency.p99;
    const throughputPass = throughputRatio >= 1;
    const p99Pass = measured.latency.p99 <= baseline.latency.p99;
    const allAccepted = measured.rejected === 0 && measured.timedOut === 0;
    // The layer accepts whatever it can read: anything else is a fault of the layer or of the run.
    const layerAnswered = layerOnly.rejected === 0 && layerOnly.timedOut === 0 && layerOnly.unmatchedAnswers === 0;
    console.log();
    printTable([
      ["figure", "Tessera", "target", "result", "baseline (FreeRADIUS + rlm_totp)", "ratio"],
      ["throughput", `${fmt(measured.requestsPerSecond)} req/s`, ">= baseline", throughputPass ? "PASS" : "FAIL", `${fmt(baseline.requestsPerSecond)} req/s`, `${fmt(throughputRatio, 2)}x`],
      ["latency p99", `${fmt(measured.latency.p99, 2)} ms`, "<= baseline", p99Pass ? "PASS" : "FAIL", `${fmt(baseline.latency.p99, 2)} ms`, `${fmt(p99Ratio, 2)}x`],
      ["latency p50", `${fmt(measured.latency.p50, 2)} ms`, "", "", `${fmt(baseline.latency.p50, 2)} ms`, ""],
      ["rejected / timed out", lossesOf(measured), "none", allAccepted ? "PASS" : "FAIL", lossesOf(baseline), ""],
      ["  of the rejects, across a step change", fmt(measured.rejectedAcrossStepChange), "", "", fmt(baseline.rejectedAcrossStepChange), ""],
      ["unmatched answers / users skipped", `${fmt(measured.unmatchedAnswers)} / ${fmt(measured.skippedUsers)}`, "", "", `${fmt(baseline.unmatchedAnswers)} / ${fmt(baseline.skippedUsers)}`, ""],
      ["server CPU per request", `${fmt(measured.serverCpuUsPerRequest)} µs`, "", "", `${fmt(baseline.serverCpuUsPerRequest)} µs`, `${fmt(measured.serverCpuUsPerRequest / baseline.serverCpuUsPerRequest, 2)}x`],
      ["generator CPU (of one core)", `${fmt(measured.generatorCpuPercent)} %`, "", "", `${fmt(baseline.generatorCpuPercent)} %`, ""],
      ["RADIUS layer alone, no login: throughput", `${fmt(layerOnly.requestsPerSecond)} req/s`, "", "", `${fmt(baseline.requestsPerSecond)} req/s`, `${fmt(layerOnly.requestsPerSecond / baseline.requestsPerSecond, 2)}x`],
      ["  its latency p99", `${fmt(layerOnly.latency.p99, 2)} ms`, "", "", `${fmt(baseline.latency.p99, 2)} ms`, `${fmt(layerOnly.latency.p99 / baseline.latency.p99, 2)}x`],
      ["  its server CPU per request", `${fmt(layerOnly.serverCpuUsPerRequest)} µs`, "", "", `${fmt(baseline.serverCpuUsPerRequest)} µs`, `${fmt(layerOnly.serverCpuUsPerRequest / baseline.serverCpuUsPerRequest, 2)}x`],
      ["  its generator CPU (of one core)", `${fmt(layerOnly.generatorCpuPercent)} %`, "", "", "", ""],
      ["  its rejected / timed out / unmatched", `${lossesOf(layerOnly)} / ${fmt(layerOnly.unmatchedAnswers)}`, "none", layerAnswered ? "PASS" : "FAIL", "", ""],
    ]);
    console.log(`\n  load average (1, 5, 15 min) at the end: ${loadAverage()}`);
    if (baseline.generatorCpuPercent > 90) console.log("\nnote: the generator was near a full core during the baseline run; FreeRADIUS may be faster than measured.");
    reportResult({
      name: "radius-auth",
      machine: machineInfo,
      inputs: { users: userCount, warmup: WARMUP_REQUESTS, requests, outstanding, database: database.target.kind, freeradius: freeradiusVersion, freeradiusThreads: FREERADIUS_THREADS },
      figures: [
        {
          name: "RADIUS PAP+TOTP throughput",
          value: Math.round(measured.requestsPerSecond),
          unit: "req/s",
          target: { op: ">=", value: Math.round(baseline.requestsPerSecond) },
          pass: throughputPass,
          baseline: { name: "FreeRADIUS 3.2 + rlm_totp", value: Math.round(baseline.requestsPerSecond) },
          ratio: throughputRatio,
        },
        {
          name: "RADIUS PAP+TOTP latency",
          unit: "ms",
          value: measured.latency.p99,
          percentiles: measured.latency,
          target: { op: "<=", value: baseline.latency.p99, of: "p99" },
          pass: p99Pass,
          baseline: { name: "FreeRADIUS 3.2 + rlm_totp", percentiles: baseline.latency },
          ratio: p99Ratio,
        },
      ],
      tessera: measured,
      freeradius: baseline,
      radiusLayerOnly: { ...layerOnly, allAnswered: layerAnswered },
      allAccepted,
    });
  } finally {
    await stop(server);
    await database.drop();
    removeDir(dir);
    stopWatching();
  }
}

if (process.argv.includes("--layer-server")) {
  process.once("message", (/** @type {{ secret: string }} */ { secret }) => {
    serveLayerOnly(secret).catch((/** @type {Error} */ error) => {
      console.error(error);
      process.exit(1);
    });
  });
} else if (process.argv.includes("--generator")) {
  serveTaskAsChild(generateLoad);
} else {
  await main();
}

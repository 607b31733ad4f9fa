// REST authenticate throughput: POST /api/v1/auth with a fresh, valid passcode each
// time (HOTP tokens, so every request is a real accept: key decrypted, HMAC, replay
// compare-and-set, audit record), against an empty route of the same server (/healthz)
// as the baseline. Target: authenticate at least half the requests per second of the
// empty route. The server runs as `tessera serve` in a child process on SQLite; the load
// comes from autocannon in this process over loopback. After the rounds, the server
// stopped, a process of their own (this file forked with --logins-child) runs more logins
// on its database without HTTP, to show what the login alone costs.
import { fork } from "node:child_process";
import { createHash } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { hotp } from "../packages/otp/dist/index.js";
import autocannon from "autocannon";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import { benchMasterKey, cleanUpOnInterrupt, fmt, intFlag, parseFlags, printHeader, printTable, processCpuMs, removeDir, reportResult, serveTaskAsChild, startTesseraServe, seedUsersWithTokens, taskInChild, tempDir } from "./lib.js";

const flags = parseFlags(process.argv.slice(2));
const userCount = intFlag(flags, "users", 20_000);
/** Seconds of load for each kind in all, split into `rounds` that alternate with the other kind's. */
const seconds = intFlag(flags, "seconds", 10);
const rounds = intFlag(flags, "rounds", 5);
const roundSeconds = Math.max(1, Math.round(seconds / rounds));
const connections = intFlag(flags, "connections", 32);
/** `--profile DIR` writes the server's CPU profile (.cpuprofile) there, to see where its time goes. */
const profileDir = typeof flags.profile === "string" ? path.resolve(flags.profile) : undefined;

const seedOf = (/** @type {number} */ i) => createHash("sha1").update(`bench-seed-${i}`).digest();

async function seed(/** @type {string} */ dir) {
  const storage = openStorage({ kind: "sqlite", file: path.join(dir, "tessera.db") });
  await migrateToLatest(storage);
  const services = createServices(storage, createKeyring([benchMasterKey]));
  const vsId = await seedUsersWithTokens(services, { count: userCount, otpMode: "hotp", digits: 6, periodSeconds: 30, seedOf });
  const app = await services.applications.create(installerPrincipal, { virtualServerId: vsId, name: "bench", kind: "rest" });
  await storage.close();
  return { apiKey: /** @type {string} */ (app.apiKey) };
}

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

/**
 * Stops the server and waits for it to exit (SIGKILL after 10 s), so that nothing of it
 * runs beside what is measured next.
 * @param {import("node:child_process").ChildProcess} child
 */
async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  if ((await Promise.race([exited, sleep(10_000).then(() => "late")])) === "late") {
    child.kill("SIGKILL");
    await exited;
  }
}

/**
 * @typedef {object} InProcessLogins
 * @property {string} dir the server's data directory
 * @property {string} apiKey
 * @property {number} connections logins at a time
 * @property {Array<{ userId: string, passcode: string }>} warmup unmeasured logins first
 * @property {Array<{ userId: string, passcode: string }>} logins the measured ones
 */

/**
 * The logins without HTTP, in a process of their own (this file forked with
 * --logins-child), so that its CPU time is theirs alone and its heap holds none of the
 * benchmark's request bodies: the product's own path on the server's database, the
 * application found by its API key, then `services.auth.authenticate`, as the route does.
 * @param {InProcessLogins} work
 * @returns {Promise<{ logins: number, accepted: number, cpuUsPerLogin: number }>}
 */
async function loginsWithoutHttp(work) {
  const storage = openStorage({ kind: "sqlite", file: path.join(work.dir, "tessera.db") });
  try {
    const services = createServices(storage, createKeyring([benchMasterKey]));
    /** @param {Array<{ userId: string, passcode: string }>} batch */
    const loginAll = async (batch) => {
      let next = 0;
      let accepted = 0;
      const worker = async () => {
        while (next < batch.length) {
          const { userId, passcode } = /** @type {{ userId: string, passcode: string }} */ (batch[next++]);
          const application = await services.applications.authenticateApiKey(work.apiKey);
          if (!application) throw new Error("the API key finds no application");
          const outcome = await services.auth.authenticate({ application, userId, passcode, source: "127.0.0.1", method: "rest", client: { address: "127.0.0.1" } });
          if (outcome.result === "accept") accepted += 1;
        }
      };
      await Promise.all(Array.from({ length: work.connections }, worker));
      return accepted;
    };
    await loginAll(work.warmup);
    const before = process.cpuUsage();
    const accepted = await loginAll(work.logins);
    const used = process.cpuUsage(before);
    return { logins: work.logins.length, accepted, cpuUsPerLogin: (used.user + used.system) / work.logins.length };
  } finally {
    await storage.close();
  }
}

/**
 * Runs loginsWithoutHttp in a child process.
 * @param {InProcessLogins} work
 * @returns {Promise<{ logins: number, accepted: number, cpuUsPerLogin: number }>}
 */
function runLoginsWithoutHttp(work) {
  const child = tracked(fork(fileURLToPath(import.meta.url), ["--logins-child"], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  return taskInChild(child, "logins without HTTP", work);
}

function run(/** @type {import("autocannon").Options} */ options) {
  return new Promise((resolve, reject) => autocannon(options, (error, result) => (error ? reject(error) : resolve(result))));
}

async function main() {
  const machineInfo = printHeader("rest-auth");
  const dir = tempDir("rest-auth");
  /** @type {import("node:child_process").ChildProcess | undefined} */
  let server;
  const stopWatching = cleanUpOnInterrupt(children, dir, "SIGTERM");
  try {
    const { apiKey } = await seed(dir);
    const started = await startTesseraServe({ dir, profileDir });
    server = tracked(started.child);
    console.log(`inputs: ${fmt(userCount)} users with HOTP tokens, SQLite, ${connections} connections, ${rounds} rounds of ${roundSeconds} s for each kind, taken in turn, server in a child process`);

    const pid = /** @type {number} */ (server.pid);
    // The client must not be what limits the figure: every body is built before the run
    // (the next codes of every user), so sending one is a lookup, not an HMAC.
    const codesPerUser = 24;
    const bodies = Array.from({ length: userCount }, (_, i) => {
      const seed = seedOf(i);
      return Array.from({ length: codesPerUser }, (_, counter) => JSON.stringify({ userId: `user${i}`, passcode: hotp(seed, { counter, digits: 6, algorithm: "SHA1" }) }));
    });
    let next = 0;
    let accepted = 0;
    let rejected = 0;
    const emptyRun = () => run({ url: `${started.url}/healthz`, connections, duration: roundSeconds });
    const authRun = () =>
      run({
        url: `${started.url}/api/v1/auth`,
        connections,
        duration: roundSeconds,
        requests: [
          {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
            setupRequest: (/** @type {any} */ request) => {
              const i = next % userCount;
              const round = Math.floor(next / userCount);
              next += 1;
              if (round >= codesPerUser) throw new Error(`more than ${codesPerUser * userCount} requests: raise --users`);
              return { ...request, body: bodies[i]?.[round] };
            },
            onResponse: (/** @type {number} */ status, /** @type {string} */ body) => {
              if (status === 200 && body.includes('"accept"')) accepted += 1;
              else rejected += 1;
            },
          },
        ],
      });
    // The two kinds take turns, a round of each at a time, so that what else the machine
    // does weighs on both alike; each kind's figures add up its rounds.
    const totals = () => ({ requests: 0, seconds: 0, cpuMs: 0, p50s: /** @type {number[]} */ ([]), p99: 0 });
    const empty = totals();
    const auth = totals();
    for (let round = 0; round < rounds; round++) {
      for (const [kind, go] of /** @type {const} */ ([
        [empty, emptyRun],
        [auth, authRun],
      ])) {
        const cpuBefore = processCpuMs(pid);
        const result = /** @type {any} */ (await go());
        kind.cpuMs += processCpuMs(pid) - cpuBefore;
        kind.requests += result.requests.total;
        kind.seconds += result.duration;
        kind.p50s.push(result.latency.p50);
        kind.p99 = Math.max(kind.p99, result.latency.p99);
      }
    }
    // The same logins without HTTP: the server stopped, its database opened by a process
    // of their own, the product's own path (the API key, then `auth.authenticate`) with
    // the next codes, `connections` at a time. What a login costs before any request is
    // read or answered.
    await stopServer(server);
    server = undefined;
    const nextLogin = () => {
      const i = next % userCount;
      const round = Math.floor(next / userCount);
      next += 1;
      if (round >= codesPerUser) throw new Error(`more than ${codesPerUser * userCount} requests: raise --users`);
      return /** @type {{ userId: string, passcode: string }} */ (JSON.parse(/** @type {string} */ (bodies[i]?.[round])));
    };
    const measuredLogins = Math.min(20_000, userCount * 4);
    const warmup = Array.from({ length: Math.min(2_000, measuredLogins) }, nextLogin);
    const inProcess = await runLoginsWithoutHttp({ dir, apiKey, connections, warmup, logins: Array.from({ length: measuredLogins }, nextLogin) });

    const rate = (/** @type {{ requests: number, seconds: number }} */ kind) => kind.requests / kind.seconds;
    const median = (/** @type {number[]} */ values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const emptyCpuUs = (empty.cpuMs * 1000) / empty.requests;
    const authCpuUs = (auth.cpuMs * 1000) / auth.requests;
    const ratio = rate(auth) / rate(empty);
    const pass = ratio >= 0.5;
    console.log();
    printTable([
      ["figure", "value", "target", "result", "baseline (GET /healthz, same server)", "ratio"],
      ["authenticate throughput", `${fmt(rate(auth))} req/s`, ">= 0.5x baseline", pass ? "PASS" : "FAIL", `${fmt(rate(empty))} req/s`, `${fmt(ratio, 2)}x`],
      ["authenticate latency p50 / p99", `${median(auth.p50s)} / ${auth.p99} ms`, "", "", `${median(empty.p50s)} / ${empty.p99} ms`, ""],
      ["server CPU per request", `${fmt(authCpuUs)} µs`, "", "", `${fmt(emptyCpuUs)} µs`, `${fmt(authCpuUs / emptyCpuUs, 2)}x`],
      ["accepted / rejected", `${fmt(accepted)} / ${fmt(rejected)}`, "all accepted", rejected === 0 ? "PASS" : "FAIL", "", ""],
      ["a login without HTTP: CPU per login", `${fmt(inProcess.cpuUsPerLogin)} µs`, "", "", `${fmt(2 * emptyCpuUs)} µs (twice the empty route's)`, `${fmt(inProcess.cpuUsPerLogin / (2 * emptyCpuUs), 2)}x`],
      ["  its logins / accepted", `${fmt(inProcess.logins)} / ${fmt(inProcess.accepted)}`, "all accepted", inProcess.accepted === inProcess.logins ? "PASS" : "FAIL", "", ""],
    ]);
    console.log(
      "\n  Twice the empty route's CPU is what a whole login may cost the server for half its rate, where the server's CPU is what limits both;\n" +
        "  the login's CPU without HTTP is what the login alone costs, before any request is read or any answer written.",
    );
    reportResult({
      name: "rest-auth",
      machine: machineInfo,
      inputs: { users: userCount, connections, seconds, rounds, database: "sqlite" },
      figures: [
        { name: "authenticate throughput", value: Math.round(rate(auth)), unit: "req/s", target: { op: ">=", value: Math.round(rate(empty) / 2) }, pass, baseline: { name: "GET /healthz", value: Math.round(rate(empty)) }, ratio },
        { name: "authenticate p99", value: auth.p99, unit: "ms" },
        { name: "server CPU per authenticate", value: Math.round(authCpuUs), unit: "µs", baseline: { name: "GET /healthz", value: Math.round(emptyCpuUs) }, ratio: authCpuUs / emptyCpuUs },
        { name: "CPU per login without HTTP", value: Math.round(inProcess.cpuUsPerLogin), unit: "µs", baseline: { name: "twice GET /healthz", value: Math.round(2 * emptyCpuUs) }, ratio: inProcess.cpuUsPerLogin / (2 * emptyCpuUs) },
      ],
    });
  } finally {
    if (server) await stopServer(server);
    removeDir(dir);
    stopWatching();
  }
}

if (process.argv.includes("--logins-child")) {
  serveTaskAsChild(loginsWithoutHttp);
} else {
  await main();
}

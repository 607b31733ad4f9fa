// Push OTP round trip latency: from the application's `POST /api/v1/auth` with an empty
// passcode, through the challenge reaching the user's tessera app over its live
// connection (signed event stream) and the app's signed approval carrying its current
// passcode, to the application's long poll answering `accept`. Target: p99 under 20 ms.
// Baseline, same server, client and run: a typed passcode, one `POST /api/v1/auth` that
// answers accept (the least any login costs).
//
// The server runs as `tessera serve` in a child process on SQLite. The devices are real
// tessera apps (the authenticator core of packages/authenticator/dist), enrolled from the
// links of real enrollment mails, in a second child process: this same file, forked with
// BENCH_PUSH_DEVICES=1. The load client is this process (node:http, keep-alive). All three
// read one monotonic clock (process.hrtime), so the app's timestamps and the client's can
// be set side by side to show where the time goes.
import { fork } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createAuthenticator, emptyState } from "../packages/authenticator/dist/core/index.js";
import { hotp } from "../packages/otp/dist/index.js";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import { benchMasterKey, cleanUpOnInterrupt, fmt, intFlag, loadAverage, parseFlags, percentiles, printHeader, printTable, processCpuMs, removeDir, reportResult, startTesseraServe, tempDir } from "./lib.js";

const TARGET_P99_MS = 20;
/** Round trips of one kind before the next kind's turn, so the machine's other work weighs on every kind alike. */
const CHUNK = 100;
/** How long the application's long poll waits for the user's answer. */
const WAIT_SECONDS = 10;
const APPLICATION = "bench portal";

const benchFile = fileURLToPath(import.meta.url);
/** Milliseconds on the machine's monotonic clock, the same in every process. */
const clockMs = () => Number(process.hrtime.bigint()) / 1e6;

const seedOf = (/** @type {number} */ i) => createHash("sha1").update(`bench-typed-seed-${i}`).digest();
const pushUserId = (/** @type {number} */ i) => `push${String(i).padStart(4, "0")}`;
const typedUserId = (/** @type {number} */ i) => `typed${String(i).padStart(4, "0")}`;

/**
 * Before the server starts: the users, the inventory mobile tokens the push users are
 * provisioned from, the typed users' HOTP tokens (bound to them as if enrolled, as in
 * rest-auth), and the REST application with Push OTP on.
 * @param {import("../packages/server/dist/storage/database.js").Storage} storage
 * @param {number} userCount
 */
async function seed(storage, userCount) {
  await migrateToLatest(storage);
  const services = createServices(storage, createKeyring([benchMasterKey]));
  const vs = await services.virtualServers.create(installerPrincipal, { name: "Bench" });
  const userIds = Array.from({ length: userCount }, (_, i) => [pushUserId(i), typedUserId(i)]).flat();
  await services.importUsers(installerPrincipal, vs.id, ["userId,email", ...userIds.map((userId) => `${userId},${userId}@example.test`)].join("\n"));
  await services.tokens.add(installerPrincipal, { virtualServerId: vs.id, type: "mobile", count: userCount });
  /** @type {import("../packages/server/dist/modules/tokens/seed-files/seed.js").ImportedSeed[]} */
  const seeds = Array.from({ length: userCount }, (_, i) => ({ serial: `BENCH-${i}`, secret: seedOf(i), otpMode: "hotp", digits: 6, periodSeconds: 30, algorithm: "SHA1", counter: 0 }));
  await services.tokens.importSeeds(installerPrincipal, { virtualServerId: vs.id, seeds });
  const { db } = storage;
  const typed = await db.selectFrom("users").select(["id", "user_id"]).where("virtual_server_id", "=", vs.id).where("user_id", "like", "typed%").execute();
  await db.transaction().execute(async (trx) => {
    for (const user of typed) {
      await trx.updateTable("tokens").set({ state: "active", user_pk: user.id }).where("serial", "=", `BENCH-${Number(user.user_id.slice(5))}`).execute();
    }
  });
  const app = await services.applications.create(installerPrincipal, { virtualServerId: vs.id, name: APPLICATION, kind: "rest", pushOtp: true });
  return { virtualServerId: vs.id, apiKey: /** @type {string} */ (app.apiKey) };
}

/**
 * Once the server listens (its address is in every enrollment link): one provisioning
 * task for the push users through the real service, and the links of their enrollment
 * mails, which wait in the outbox without SMTP (what `tessera mail outbox` shows).
 * @param {import("../packages/server/dist/storage/database.js").Storage} storage
 * @param {{ virtualServerId: string, userCount: number, url: string }} input
 */
async function provisionPushUsers(storage, { virtualServerId, userCount, url }) {
  const services = createServices(storage, createKeyring([benchMasterKey]), { publicUrl: url });
  const userIds = Array.from({ length: userCount }, (_, i) => pushUserId(i));
  await services.provisioning.createTask(installerPrincipal, { virtualServerId, users: { userIds }, tokenType: "mobile", apps: ["tessera"] });
  const outbox = await services.mail.listOutbox(installerPrincipal, { virtualServerId, status: "queued", limit: userCount });
  const links = outbox.items.map((item) => item.enrollUrl).filter((link) => typeof link === "string");
  if (links.length !== userCount) throw new Error(`expected ${userCount} enrollment links in the outbox, found ${links.length}`);
  return links;
}

/** `--cpu-prof` into `profileDir`, when one is given. */
const profiling = (/** @type {string | undefined} */ profileDir) => (profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : []);

/**
 * @typedef {{ userId: string, serial: string, pushNow: string, pushApplications: string[] }} EnrolledDevice
 * @typedef {{ id: string, receivedMs: number, answerSentMs?: number, answeredMs?: number, status: string }} AnswerTiming
 */

/**
 * The devices process. `ask` sends a message and resolves with the next one it sends back.
 * @param {string | undefined} profileDir
 * @returns {{ child: import("node:child_process").ChildProcess, ask: (message: Record<string, unknown>) => Promise<any> }}
 */
function startDevices(profileDir) {
  const child = fork(benchFile, [], {
    env: { ...process.env, BENCH_PUSH_DEVICES: "1", BENCH_RESULT_FILE: "" },
    execArgv: [...process.execArgv, ...profiling(profileDir)],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  /** @type {{ resolve: (message: any) => void, reject: (error: Error) => void } | null} */
  let waiting = null;
  child.on("message", (message) => waiting?.resolve(message));
  child.on("exit", (code) => waiting?.reject(new Error(`the devices process exited with ${code}`)));
  return {
    child,
    ask: (message) =>
      new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        child.send(message);
      }),
  };
}

/**
 * A keep-alive HTTP client with the application's API key, as an application would keep
 * its connections open.
 * @param {string} url @param {string} apiKey @param {number} maxSockets
 * @returns {(method: string, pathname: string, body?: unknown) => Promise<{ status: number, json: any }>}
 */
function applicationClient(url, apiKey, maxSockets) {
  const { hostname, port } = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  return (method, pathname, body) =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      /** @type {Record<string, string | number>} */
      const headers = { authorization: `Bearer ${apiKey}` };
      if (payload !== undefined) Object.assign(headers, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
      const request = http.request({ agent, hostname, port, method, path: pathname, headers }, (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => {
          try {
            resolve({ status: /** @type {number} */ (response.statusCode), json: JSON.parse(text) });
          } catch (error) {
            reject(error);
          }
        });
      });
      request.on("error", reject);
      request.end(payload);
    });
}

/**
 * @typedef {{ ms: number, ok: boolean, problem: string, challengeId?: string, t0Ms?: number, pendingMs?: number, t1Ms?: number }} Trip
 * @typedef {"typed" | "push" | "healthz"} Kind
 */

/**
 * The three kinds of round trip. A user has at most one login outstanding; the users
 * take turns.
 * @param {ReturnType<typeof applicationClient>} api
 * @param {number} userCount
 * @returns {Record<Kind, () => Promise<Trip>>}
 */
function roundTrips(api, userCount) {
  const counters = new Array(userCount).fill(0);
  const busy = new Set();
  let turn = 0;
  const takeUser = () => {
    for (;;) {
      const index = turn++ % userCount;
      if (!busy.has(index)) {
        busy.add(index);
        return index;
      }
    }
  };
  return {
    /** Push OTP: POST with an empty passcode answers pending; the long poll waits for the app's approval. */
    async push() {
      const index = takeUser();
      try {
        const t0Ms = clockMs();
        const started = await api("POST", "/api/v1/auth", { userId: pushUserId(index), passcode: "" });
        const pendingMs = clockMs();
        if (started.json.result !== "pending") return { ms: pendingMs - t0Ms, ok: false, problem: `POST answered ${JSON.stringify(started.json)}` };
        const outcome = await api("GET", `/api/v1/auth/challenges/${started.json.challengeId}?wait=${WAIT_SECONDS}`);
        const t1Ms = clockMs();
        return { ms: t1Ms - t0Ms, ok: outcome.json.status === "accept", problem: `long poll answered ${JSON.stringify(outcome.json)}`, challengeId: started.json.challengeId, t0Ms, pendingMs, t1Ms };
      } finally {
        busy.delete(index);
      }
    },
    /** The baseline: the user's next HOTP code typed, one POST that answers accept. */
    async typed() {
      const index = takeUser();
      try {
        const passcode = hotp(seedOf(index), { counter: counters[index]++, digits: 6, algorithm: "SHA1" });
        const t0Ms = clockMs();
        const answer = await api("POST", "/api/v1/auth", { userId: typedUserId(index), passcode });
        return { ms: clockMs() - t0Ms, ok: answer.json.result === "accept", problem: `POST answered ${JSON.stringify(answer.json)}` };
      } finally {
        busy.delete(index);
      }
    },
    /** For reference: an empty route, the HTTP floor. */
    async healthz() {
      const t0Ms = clockMs();
      const answer = await api("GET", "/healthz");
      return { ms: clockMs() - t0Ms, ok: answer.status === 200, problem: `GET /healthz answered ${answer.status}` };
    },
  };
}

/**
 * @typedef {{ server?: number, apps?: number }} Pids
 * @typedef {{ wallMs: number, serverCpuMs: number, appsCpuMs: number, clientCpuMs: number }} Costs
 */

/**
 * `count` round trips of each kind with `outstanding` in flight, CHUNK of one kind, then
 * CHUNK of the next, and so on. Also adds up, per kind, the wall time and the CPU time
 * of the server, of the apps and of this client.
 * @param {Record<Kind, () => Promise<Trip>>} kinds @param {number} count @param {number} outstanding @param {Pids} pids
 */
async function measure(kinds, count, outstanding, pids) {
  /** @type {Record<Kind, Trip[]>} */
  const trips = { typed: [], push: [], healthz: [] };
  /** @type {Record<Kind, Costs>} */
  const costs = { typed: { wallMs: 0, serverCpuMs: 0, appsCpuMs: 0, clientCpuMs: 0 }, push: { wallMs: 0, serverCpuMs: 0, appsCpuMs: 0, clientCpuMs: 0 }, healthz: { wallMs: 0, serverCpuMs: 0, appsCpuMs: 0, clientCpuMs: 0 } };
  const sample = () => {
    const client = process.cpuUsage();
    return { wallMs: clockMs(), serverCpuMs: processCpuMs(pids.server), appsCpuMs: processCpuMs(pids.apps), clientCpuMs: (client.user + client.system) / 1000 };
  };
  for (let done = 0; done < count; done += CHUNK) {
    const size = Math.min(CHUNK, count - done);
    for (const kind of /** @type {Kind[]} */ (["typed", "push", "healthz"])) {
      let started = 0;
      const worker = async () => {
        while (started < size) {
          started += 1;
          trips[kind].push(await kinds[kind]());
        }
      };
      const before = sample();
      await Promise.all(Array.from({ length: outstanding }, worker));
      const after = sample();
      for (const key of /** @type {(keyof Costs)[]} */ (Object.keys(after))) costs[kind][key] += after[key] - before[key];
    }
  }
  return { trips, costs };
}

/**
 * Where a push round trip's time goes, from the client's timestamps and the app's.
 * @param {Trip[]} trips @param {Map<string, AnswerTiming>} answers
 */
function breakdown(trips, answers) {
  const joined = trips.flatMap((trip) => {
    const app = trip.ok && trip.challengeId ? answers.get(trip.challengeId) : undefined;
    return app?.answerSentMs !== undefined && app.answeredMs !== undefined
      ? [{ t0: /** @type {number} */ (trip.t0Ms), pending: /** @type {number} */ (trip.pendingMs), t1: /** @type {number} */ (trip.t1Ms), received: app.receivedMs, answerSent: app.answerSentMs, answered: app.answeredMs }]
      : [];
  });
  /** @param {(t: (typeof joined)[number]) => number} span */
  const of = (span) => percentiles(joined.map(span));
  return {
    roundTrips: joined.length,
    receivedBeforePending: joined.filter((t) => t.received < t.pending).length,
    answeredBeforePending: joined.filter((t) => t.answered < t.pending).length,
    spans: {
      "POST /api/v1/auth sent -> answered pending": of((t) => t.pending - t.t0),
      "POST sent -> challenge at the app (live stream)": of((t) => t.received - t.t0),
      "app: challenge received -> approval sent": of((t) => t.answerSent - t.received),
      "app: approval sent -> server answered it": of((t) => t.answered - t.answerSent),
      "app's answer back -> long poll returned": of((t) => t.t1 - t.answered),
      "long poll sent -> returned": of((t) => t.t1 - t.pending),
      "whole round trip": of((t) => t.t1 - t.t0),
    },
  };
}

const ms = (/** @type {number} */ value) => `${fmt(value, 2)} ms`;
/** The machine is shared: its load average says how much other work ran beside the benchmark. */
const row = (/** @type {string} */ name, /** @type {ReturnType<typeof percentiles>} */ p) => [name, ms(p.p50), ms(p.p95), ms(p.p99), ms(p.max)];

const how = (/** @type {number} */ outstanding) => (outstanding === 1 ? "sequential" : `${outstanding} outstanding`);

/**
 * The breakdown of the push round trips by the client's and the app's timestamps, and
 * what one round trip of each kind cost each process in CPU, with the rate reached.
 * @param {Array<{ outstanding: number, trips: Record<Kind, Trip[]>, costs: Record<Kind, Costs> }>} figures
 * @param {Map<string, AnswerTiming>} answers
 */
function printWhereTheTimeGoes(figures, answers) {
  const breakdowns = figures.map((f) => ({ name: how(f.outstanding), ...breakdown(f.trips.push, answers) }));
  for (const b of breakdowns) {
    console.log(`\n  where the time goes, ${b.name} (${fmt(b.roundTrips)} push round trips; the app had the challenge before the POST answered in ${fmt(b.receivedBeforePending)}, its approval done before in ${fmt(b.answeredBeforePending)}):`);
    printTable([["span", "p50", "p95", "p99", "max"], ...Object.entries(b.spans).map(([name, p]) => row(name, p))], "    ");
  }
  for (const f of figures) {
    console.log(`\n  CPU per round trip and rate, ${how(f.outstanding)}:`);
    printTable(
      [
        ["kind", "server CPU", "apps CPU", "client CPU", "round trips/s"],
        ...(/** @type {Kind[]} */ (["push", "typed", "healthz"])).map((kind) => {
          const c = f.costs[kind];
          const n = f.trips[kind].length;
          return [kind, ms(c.serverCpuMs / n), ms(c.appsCpuMs / n), ms(c.clientCpuMs / n), fmt((n / c.wallMs) * 1000)];
        }),
      ],
      "    ",
    );
  }
  return breakdowns;
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const userCount = intFlag(flags, "users", 50);
  const count = intFlag(flags, "roundtrips", 1000);
  const concurrency = intFlag(flags, "concurrency", 8);
  const warmup = intFlag(flags, "warmup", 100);
  /** `--profile DIR` writes the server's and the apps' CPU profiles (.cpuprofile) there. */
  const profileDir = typeof flags.profile === "string" ? path.resolve(flags.profile) : undefined;
  if (concurrency > userCount) throw new Error(`--concurrency ${concurrency} needs at least as many --users: one login outstanding per user`);

  const machineInfo = printHeader("push-roundtrip", { "load average (1, 5, 15 min) at start": loadAverage() });
  const dir = tempDir("push-roundtrip");
  /** @type {import("node:child_process").ChildProcess[]} */
  const children = [];
  const stopWatching = cleanUpOnInterrupt(children, dir, "SIGTERM");
  try {
    const storage = openStorage({ kind: "sqlite", file: path.join(dir, "tessera.db") });
    let seeded, server, links;
    try {
      seeded = await seed(storage, userCount);
      server = await startTesseraServe({ dir, profileDir });
      children.push(server.child);
      links = await provisionPushUsers(storage, { virtualServerId: seeded.virtualServerId, userCount, url: server.url });
    } finally {
      await storage.close();
    }

    const devices = startDevices(profileDir);
    children.push(devices.child);
    const enrolled = /** @type {{ devices: EnrolledDevice[], enrollMs: number }} */ (await devices.ask({ type: "enroll", links }));
    const wrong = enrolled.devices.filter((device) => device.pushNow !== "enabled" || !device.pushApplications.includes(APPLICATION));
    if (enrolled.devices.length !== userCount || wrong.length > 0) throw new Error(`enrollment went wrong: ${JSON.stringify(wrong.slice(0, 3))}`);
    console.log(
      `inputs: ${fmt(userCount)} users, each with one tessera app enrolled from its enrollment mail's link (${fmt(enrolled.enrollMs)} ms for all), ` +
        `Autosend Passcode on, live connection open; ${fmt(count)} round trips of each kind one at a time, then ${fmt(count)} with ${concurrency} outstanding, ` +
        `after ${fmt(warmup)} of each to warm up; SQLite; server, apps and client in three processes`,
    );

    const kinds = roundTrips(applicationClient(server.url, seeded.apiKey, 2 * concurrency + 2), userCount);
    const pids = { server: server.child.pid, apps: devices.child.pid };
    await measure(kinds, warmup, 1, pids);
    const runs = [
      { name: "push round trip, sequential", outstanding: 1, ...(await measure(kinds, count, 1, pids)) },
      { name: `push round trip, ${concurrency} outstanding`, outstanding: concurrency, ...(await measure(kinds, count, concurrency, pids)) },
    ];
    const report = /** @type {{ timings: AnswerTiming[], liveConnections: number }} */ (await devices.ask({ type: "report" }));
    await devices.ask({ type: "stop" });
    if (profileDir) {
      // The profiles are written as the processes exit.
      server.child.kill("SIGTERM");
      await Promise.all([server.child, devices.child].map((child) => (child.exitCode === null ? new Promise((resolve) => child.once("exit", resolve)) : undefined)));
    }

    // Every login must be an accept, and every answer of an app "approved".
    const all = runs.flatMap((run) => Object.values(run.trips).flat());
    const failed = all.filter((trip) => !trip.ok);
    const notApproved = report.timings.filter((timing) => timing.status !== "approved");
    for (const trip of failed.slice(0, 5)) console.log(`  not accepted: ${trip.problem}`);
    for (const timing of notApproved.slice(0, 5)) console.log(`  an app's answer was not approved: ${timing.id} ${timing.status}`);
    const allAccepted = failed.length === 0 && notApproved.length === 0;

    const stats = (/** @type {Trip[]} */ trips) => percentiles(trips.map((trip) => trip.ms));
    const figures = runs.map((run) => {
      const push = stats(run.trips.push);
      const typed = stats(run.trips.typed);
      return { ...run, push, typed, healthz: stats(run.trips.healthz), pass: push.p99 < TARGET_P99_MS, ratio: push.p99 / typed.p99 };
    });
    console.log();
    printTable([
      ["figure", "p50", "p95", "p99", "max", "target", "result", "baseline p99 (typed passcode)", "ratio (p99)"],
      ...figures.map((f) => [...row(f.name, f.push), `p99 < ${TARGET_P99_MS} ms`, f.pass ? "PASS" : "FAIL", ms(f.typed.p99), `${fmt(f.ratio, 2)}x`]),
      ...figures.map((f) => row(`  baseline: typed passcode, ${how(f.outstanding)}`, f.typed)),
      ...figures.map((f) => row(`  for reference: GET /healthz, ${how(f.outstanding)}`, f.healthz)),
      ["accepted / not", `${fmt(all.length - failed.length)} / ${fmt(failed.length)}`, "", "", "", "all accepted", allAccepted ? "PASS" : "FAIL"],
    ]);

    const breakdowns = printWhereTheTimeGoes(figures, new Map(report.timings.map((timing) => [timing.id, timing])));
    console.log(`\n  load average (1, 5, 15 min) at the end: ${loadAverage()}`);
    if (profileDir) console.log(`  CPU profiles of the server and the apps: ${profileDir}`);
    if (report.liveConnections !== userCount) console.log(`\n  the apps opened ${report.liveConnections} live connections for ${userCount} devices: some reconnected`);

    reportResult({
      name: "push-roundtrip",
      machine: machineInfo,
      inputs: { users: userCount, roundTrips: count, concurrency, warmup, database: "sqlite", processes: "server, apps, client", loadAverageAtEnd: os.loadavg() },
      figures: figures.map((f) => ({
        name: f.name,
        unit: "ms",
        value: f.push.p99,
        percentiles: f.push,
        target: { op: "<", value: TARGET_P99_MS, of: "p99" },
        pass: f.pass,
        baseline: { name: "typed passcode: POST /api/v1/auth answering accept", percentiles: f.typed },
        ratio: Math.round(f.ratio * 1000) / 1000,
        healthz: f.healthz,
        costs: f.costs,
      })),
      breakdown: breakdowns,
      accepted: all.length - failed.length,
      notAccepted: failed.length,
      appAnswersNotApproved: notApproved.length,
      liveConnections: report.liveConnections,
      pass: figures.every((f) => f.pass) && allAccepted,
    });
  } finally {
    for (const child of children) child.kill("SIGTERM");
    removeDir(dir);
    stopWatching();
  }
}

// ---------------------------------------------------------------------------------------
// The devices process: one tessera app per user, as on a phone, each with its own state
// and device key, all answering "approve" the moment a login arrives.

function runDevices() {
  /** @type {Map<string, AnswerTiming>} */
  const timings = new Map();
  const timing = (/** @type {string} */ id) => {
    let found = timings.get(id);
    if (!found) timings.set(id, (found = { id, receivedMs: 0, status: "not answered" }));
    return found;
  };
  const stop = new AbortController();
  let liveConnections = 0;
  let onLive = () => {};

  /**
   * The platform's fetch, with timestamps: when an approval leaves and when its answer is
   * back; and a count of the live connections opened.
   * @type {typeof fetch}
   */
  const timedFetch = async (input, init) => {
    const url = String(input);
    const answer = /\/challenges\/([^/]+)\/answer$/.exec(url)?.[1];
    if (answer) timing(answer).answerSentMs = clockMs();
    const response = await fetch(input, init);
    if (answer) timing(answer).answeredMs = clockMs();
    if (url.endsWith("/live") && response.ok) {
      liveConnections += 1;
      onLive();
    }
    return response;
  };

  /** The app's state in memory (the CLI keeps it in a 0600 file, the web app in IndexedDB). */
  const memoryStore = () => {
    let state = emptyState();
    return {
      load: async () => state,
      save: async (/** @type {typeof state} */ next) => {
        state = next;
      },
    };
  };

  /** @param {string[]} links @returns {Promise<{ devices: EnrolledDevice[], enrollMs: number }>} */
  async function enrollAndListen(links) {
    const startedMs = clockMs();
    const apps = [];
    for (const link of links) {
      const app = createAuthenticator({ store: memoryStore(), fetch: timedFetch, platform: { os: "Android", osVersion: "15", deviceType: "phone", appVersion: "bench" } });
      const token = await app.enroll(link, { pushPermitted: true });
      const [setting] = await app.setAutosend(true);
      apps.push({ app, device: { userId: token.userId, serial: token.serial, pushNow: setting?.pushNow ?? "none", pushApplications: token.pushApplications } });
    }
    const allLive = new Promise((resolve) => {
      onLive = () => liveConnections >= apps.length && resolve(undefined);
    });
    for (const { app } of apps) {
      // As `tessera-authenticator listen --answer approve`: each login answered as it comes.
      void app.watchChallenges(
        async (challenge) => {
          const record = timing(challenge.id);
          if (record.receivedMs !== 0) return;
          record.receivedMs = clockMs();
          try {
            record.status = (await app.answerChallenge(challenge, "approve")).status;
          } catch (error) {
            record.status = `failed: ${/** @type {Error} */ (error).message}`;
          }
        },
        { signal: stop.signal },
      );
    }
    await allLive;
    return { devices: apps.map(({ device }) => device), enrollMs: clockMs() - startedMs };
  }

  const send = (/** @type {unknown} */ message) => process.send?.(message);
  process.on("disconnect", () => process.exit(0));
  process.on("message", (/** @type {any} */ message) => {
    if (message.type === "enroll") {
      enrollAndListen(message.links).then(send, (error) => {
        console.error("devices:", error);
        process.exit(1);
      });
    } else if (message.type === "report") {
      send({ timings: [...timings.values()], liveConnections });
    } else if (message.type === "stop") {
      stop.abort();
      // Exits once the answer is out (a CPU profile, when asked for, is written at exit).
      process.send?.({ stopped: true }, () => process.exit(0));
    }
  });
}

if (process.env.BENCH_PUSH_DEVICES === "1") runDevices();
else await main();

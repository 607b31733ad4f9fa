// Shared helpers for the benchmarks: machine description, seeded random numbers,
// generated users, timing statistics, aligned tables and the result hand-off to run.js.
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { once } from "node:events";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { seededRandom as seeded } from "../packages/server/dist/testing/random.js";

const require = createRequire(import.meta.url);

/** A fixed master key: the benchmarks never hold real secrets. */
export const benchMasterKey = Buffer.alloc(32, 0x5a);

/**
 * The machine the figures come from.
 * @returns {{ cpus: number, cpuModel: string, memoryGiB: number, platform: string, node: string, sqlite: string }}
 */
export function machine() {
  const cpus = os.cpus();
  const Database = require("better-sqlite3");
  const probe = new Database(":memory:");
  const sqlite = /** @type {{ v: string }} */ (probe.prepare("select sqlite_version() as v").get()).v;
  probe.close();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform} ${process.arch}`,
    node: process.version,
    sqlite,
  };
}

/**
 * Prints the machine once, at the top of a benchmark's output.
 * @param {string} name
 * @param {Record<string, string>} [extra] more lines, such as the PostgreSQL version
 */
export function printHeader(name, extra = {}) {
  const m = machine();
  console.log(`\n== ${name} ==`);
  console.log(`machine: ${m.cpus} cpus (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.platform}, node ${m.node}, SQLite ${m.sqlite}`);
  for (const [key, value] of Object.entries(extra)) console.log(`${key}: ${value}`);
  return m;
}

/**
 * A small seeded generator (the tests' mulberry32): the same seed gives the same data every run.
 * @param {number} seed
 * @returns {() => number} uniform in [0, 1)
 */
export function seededRandom(seed) {
  return seeded(seed).next;
}

/**
 * @template T
 * @param {() => number} random
 * @param {readonly T[]} items
 * @returns {T}
 */
export function pick(random, items) {
  return /** @type {T} */ (items[Math.floor(random() * items.length)]);
}

const firstNames = ["Anna", "Bernard", "Chloé", "David", "Emma", "François", "Gabriel", "Hélène", "Inès", "Jules", "Karim", "Léa", "Marc", "Nadia", "Olivier", "Paul", "Quentin", "Rose", "Sophie", "Thomas", "Ugo", "Valérie", "William", "Yasmine", "Zoé"];
const lastNames = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont"];
const groupNames = ["staff", "vpn", "finance", "hr", "it", "sales", "support", "engineering", "legal", "contractors", "managers", "remote", "radius-admins", "helpdesk", "marketing", "ops"];

/**
 * @typedef {{ userId: string, firstName: string, lastName: string, email: string, groups: string[] }} BenchUser
 */

/**
 * The benchmark users, generated one at a time (never all held in memory): user ids
 * `u0000001`..., 1 to 3 distinct groups each.
 * @param {number} count
 * @param {number} [seed]
 * @returns {Generator<BenchUser>}
 */
export function* generateUsers(count, seed = 42) {
  const random = seededRandom(seed);
  for (let i = 1; i <= count; i += 1) {
    const firstName = pick(random, firstNames);
    const lastName = pick(random, lastNames);
    const userId = `u${String(i).padStart(7, "0")}`;
    const groups = new Set();
    const wanted = 1 + Math.floor(random() * 3);
    while (groups.size < wanted) groups.add(pick(random, groupNames));
    const ascii = `${firstName}.${lastName}`.normalize("NFD").replace(/[^A-Za-z.]/g, "").toLowerCase();
    yield { userId, firstName, lastName, email: `${ascii}.${i}@example.com`, groups: [...groups] };
  }
}

/**
 * Writes the users as CSV (header userId,firstName,lastName,email,groups; groups joined with ";").
 * @param {string} file
 * @param {number} count
 * @param {number} [seed]
 * @returns {Promise<number>} bytes written
 */
export async function writeUsersCsv(file, count, seed = 42) {
  const out = createWriteStream(file);
  let bytes = 0;
  let chunk = "userId,firstName,lastName,email,groups\n";
  for (const user of generateUsers(count, seed)) {
    chunk += `${user.userId},${user.firstName},${user.lastName},${user.email},${user.groups.join(";")}\n`;
    if (chunk.length > 1 << 16) {
      bytes += Buffer.byteLength(chunk);
      if (!out.write(chunk)) await once(out, "drain");
      chunk = "";
    }
  }
  bytes += Buffer.byteLength(chunk);
  out.end(chunk);
  await once(out, "finish");
  return bytes;
}

/** @param {string} label */
export function tempDir(label) {
  return mkdtempSync(path.join(os.tmpdir(), `tessera-bench-${label}-`));
}

/** @param {string} dir */
export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** A random lower-case hex suffix for database names. */
export function randomSuffix() {
  return randomBytes(5).toString("hex");
}

/**
 * CPU time (user + system, in ms, all its threads) another process has used so far, from
 * /proc (Linux; clock ticks of 10 ms); NaN where it cannot be read. CPU time per request
 * tells what a request costs even when other work shares the machine and the
 * requests-per-second figure moves with it.
 * @param {number | undefined} pid
 */
export function processCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/** The machine's load average (1, 5, 15 min): how far figures from a shared machine can be trusted. */
export const loadAverage = () => os.loadavg().map((value) => value.toFixed(2)).join(", ");

/**
 * On Ctrl-C or SIGTERM: stops the benchmark's child processes with `signal`, removes its
 * temporary directory and exits. Returns what stops watching, for the benchmark's end.
 * @param {Iterable<import("node:child_process").ChildProcess>} children
 * @param {string} dir
 * @param {NodeJS.Signals} signal
 */
export function cleanUpOnInterrupt(children, dir, signal) {
  const interrupted = () => {
    for (const child of children) child.kill(signal);
    removeDir(dir);
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  return () => {
    process.removeListener("SIGINT", interrupted);
    process.removeListener("SIGTERM", interrupted);
  };
}

export const now = () => process.hrtime.bigint();

/** @param {bigint} start @param {bigint} [end] @returns {number} milliseconds */
export const elapsedMs = (start, end = process.hrtime.bigint()) => Number(end - start) / 1e6;

/**
 * Nearest-rank percentiles of latencies in milliseconds.
 * @param {number[]} samples
 * @returns {{ count: number, p50: number, p95: number, p99: number, max: number, mean: number }}
 */
export function percentiles(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (/** @type {number} */ p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
  const mean = sorted.reduce((sum, value) => sum + value, 0) / Math.max(1, sorted.length);
  return { count: sorted.length, p50: rank(50), p95: rank(95), p99: rank(99), max: sorted.at(-1) ?? NaN, mean };
}

/** @param {number} value @param {number} [digits] */
export function fmt(value, digits = 0) {
  if (!Number.isFinite(value)) return String(value);
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** @param {number} bytes */
export const mib = (bytes) => Math.round((bytes / 2 ** 20) * 10) / 10;

/**
 * Prints rows as an aligned table; the first row is the header. Numeric-looking cells
 * are right-aligned.
 * @param {string[][]} rows
 * @param {string} [indent]
 */
export function printTable(rows, indent = "  ") {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length))) ?? [];
  const numeric = /^[-+]?[\d,.]+( ?(ms|%|x|×|MiB|users\/s|tokens\/s|s))?$/;
  rows.forEach((row, index) => {
    const line = row
      .map((cell, column) => (index > 0 && numeric.test(cell) ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)))
      .join("  ");
    console.log(indent + line.trimEnd());
    if (index === 0) console.log(indent + widths.map((width) => "-".repeat(width)).join("  "));
  });
}

/**
 * Hands a benchmark's result to run.js (BENCH_RESULT_FILE), when run from there.
 * @param {unknown} result
 */
export function reportResult(result) {
  const file = process.env.BENCH_RESULT_FILE;
  if (file) writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
}

/**
 * Command-line flags shared by the benchmarks: `--name value` or `--name=value`, and bare `--flag`.
 * @param {string[]} argv
 * @returns {Record<string, string | true>}
 */
export function parseFlags(argv) {
  /** @type {Record<string, string | true>} */
  const flags = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = /** @type {string} */ (argv[i]);
    if (!arg.startsWith("--")) continue;
    const [key, value] = arg.slice(2).split("=", 2);
    if (value !== undefined) flags[/** @type {string} */ (key)] = value;
    else if (argv[i + 1] !== undefined && !argv[i + 1]?.startsWith("--") && /^\d+$/.test(argv[i + 1] ?? "")) flags[/** @type {string} */ (key)] = /** @type {string} */ (argv[++i]);
    else flags[/** @type {string} */ (key)] = true;
  }
  return flags;
}

/**
 * A positive integer flag, or its default.
 * @param {Record<string, string | true>} flags
 * @param {string} name
 * @param {number} fallback
 */
export function intFlag(flags, name, fallback) {
  const value = flags[name];
  if (value === undefined || value === true) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new Error(`--${name} wants a positive integer, not ${value}`);
  return parsed;
}

/**
 * Seeding, not measured: users user0..user{count-1} in a new virtual server, each holding
 * an active token whose key is `seedOf(i)` (serial BENCH-i), as if enrolled.
 * @param {any} services the product's services over the benchmark's storage
 * @param {{ count: number, otpMode: "totp" | "hotp", digits: number, periodSeconds: number, seedOf: (i: number) => Buffer }} options
 * @returns {Promise<string>} the virtual server's id
 */
export async function seedUsersWithTokens(services, { count, otpMode, digits, periodSeconds, seedOf }) {
  const { installerPrincipal } = await import("../packages/server/dist/modules/operators/access.js");
  const vs = await services.virtualServers.create(installerPrincipal, { name: "Bench" });
  const csv = ["userId,email", ...Array.from({ length: count }, (_, i) => `user${i},user${i}@example.test`)].join("\n");
  await services.importUsers(installerPrincipal, vs.id, csv);
  for (let start = 0; start < count; start += 5000) {
    const seeds = Array.from({ length: Math.min(5000, count - start) }, (_, j) => ({
      serial: `BENCH-${start + j}`,
      secret: seedOf(start + j),
      otpMode,
      digits,
      periodSeconds,
      algorithm: "SHA1",
      counter: 0,
    }));
    await services.tokens.importSeeds(installerPrincipal, { virtualServerId: vs.id, seeds });
  }
  const { db } = services.storage;
  const users = await db.selectFrom("users").select(["id", "user_id"]).where("virtual_server_id", "=", vs.id).execute();
  await db.transaction().execute(async (/** @type {any} */ trx) => {
    for (const user of users) {
      await trx.updateTable("tokens").set({ state: "active", user_pk: user.id }).where("serial", "=", `BENCH-${user.user_id.slice(4)}`).execute();
    }
  });
  return vs.id;
}

const tesseraBin = fileURLToPath(new URL("../packages/server/bin/tessera.js", import.meta.url));

/**
 * Starts `tessera serve` in a child process on `dir`, HTTP on a free port and the bench
 * master key, and resolves once it listens: with its URL, and with its RADIUS port when
 * RADIUS is on. `--profile=DIR` makes it write a CPU profile there when it stops.
 * @param {{ dir: string, env?: Record<string, string>, profileDir?: string, logLevel?: string, timeoutMs?: number, onLine?: (line: string) => void }} options
 * @returns {Promise<{ url: string, radiusPort: number | null, child: import("node:child_process").ChildProcess }>}
 */
export function startTesseraServe({ dir, env = {}, profileDir, logLevel = "silent", timeoutMs = 60_000, onLine }) {
  const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
  const child = spawn(process.execPath, [...profile, tesseraBin, "serve"], {
    env: { ...process.env, TESSERA_DATA_DIR: dir, TESSERA_HTTP_PORT: "0", TESSERA_RADIUS_PORT: "off", TESSERA_MASTER_KEY: benchMasterKey.toString("hex"), TESSERA_LOG_LEVEL: logLevel, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tessera serve did not listen within ${timeoutMs / 1000} s`)), timeoutMs);
    /** @type {string | null} */
    let url = null;
    const lines = createInterface({ input: /** @type {import("node:stream").Readable} */ (child.stdout) });
    lines.on("line", (line) => {
      // It prints "Tessera is listening on URL", then "  RADIUS     udp HOST:PORT" (or "off").
      const listening = /listening on (http:\/\/\S+)/.exec(line);
      const radius = /^\s*RADIUS\s+(?:udp \S+:(\d+)|off)/.exec(line);
      if (listening) url = /** @type {string} */ (listening[1]);
      else if (radius && url) {
        clearTimeout(timer);
        resolve({ url, radiusPort: radius[1] ? Number(radius[1]) : null, child });
      } else onLine?.(line);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tessera serve exited with ${code}`));
    });
  });
}

/** @param {string} url @param {string} database */
function withDatabase(url, database) {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** @param {string} url */
const redact = (url) => url.replace(/\/\/([^:@/]+):[^@/]+@/, "//$1:***@");

/**
 * The PostgreSQL admin connection a benchmark runs on when `--pg` is given or
 * BENCH_DATABASE_URL names one (default postgres://postgres@127.0.0.1:5432/postgres);
 * null for SQLite.
 * @param {Record<string, string | boolean>} flags
 * @returns {string | null}
 */
export function benchPostgresUrl(flags) {
  if (flags.pg !== true && !process.env.BENCH_DATABASE_URL) return null;
  return process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

/**
 * The database a benchmark runs on: a temp SQLite file, or (with `postgresUrl`, an admin
 * connection such as postgres://postgres@127.0.0.1:5432/postgres) a fresh PostgreSQL
 * database made for the run, which `drop` drops (`keep` only says so in `describe`).
 * @param {{ label: string, postgresUrl: string | null, keep?: boolean }} options
 * @returns {Promise<{ target: import("../packages/server/dist/storage/database.js").DatabaseTarget, describe: string, drop: () => Promise<void> }>}
 */
export async function createBenchDatabase({ label, postgresUrl, keep = false }) {
  if (!postgresUrl) {
    const dir = tempDir(label);
    const file = path.join(dir, "tessera.db");
    return { target: { kind: "sqlite", file }, describe: `SQLite ${file} (WAL)`, drop: async () => removeDir(dir) };
  }
  const pg = (await import("pg")).default;
  const name = `tessera_bench_${randomSuffix()}`;
  const admin = new pg.Client({ connectionString: postgresUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(postgresUrl, name);
  let dropped = false;
  return {
    target: { kind: "postgres", url },
    describe: `PostgreSQL ${redact(url)} (created for this run${keep ? ", kept afterwards (--keep)" : ", dropped at the end"})`,
    async drop() {
      if (dropped) return;
      dropped = true;
      const client = new pg.Client({ connectionString: postgresUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

/**
 * A task in a forked process, the parent's side: sends `input` to `child` and resolves
 * with the `{ result }` it sends back; rejects on its `{ error }` or if it exits first.
 * @template Input, Result
 * @param {import("node:child_process").ChildProcess} child forked with an IPC channel
 * @param {string} name what the task is, for its errors
 * @param {Input} input
 * @returns {Promise<Result>}
 */
export function taskInChild(child, name, input) {
  return new Promise((resolve, reject) => {
    child.once("message", (/** @type {{ result?: Result, error?: string }} */ message) => {
      if (message.result) resolve(message.result);
      else reject(new Error(`${name}: ${message.error}`));
    });
    child.once("exit", (code) => reject(new Error(`${name}: its process exited with ${code}`)));
    child.send(/** @type {import("node:child_process").Serializable} */ (input));
  });
}

/**
 * A task in a forked process, the child's side: takes one message, runs `work` on it,
 * sends back `{ result }` or `{ error }`, and exits. Its parent gone (interrupted), it
 * has no one to report to and exits at once.
 * @template Input, Result
 * @param {(input: Input) => Promise<Result>} work
 */
export function serveTaskAsChild(work) {
  process.once("disconnect", () => process.exit(1));
  process.once("message", (/** @type {Input} */ input) => {
    work(input).then(
      (result) => process.send?.({ result }, () => process.exit(0)),
      (/** @type {Error} */ error) => process.send?.({ error: error.stack ?? error.message }, () => process.exit(1)),
    );
  });
}

// Benchmark: importing users from a CSV file through the real streaming importer on
// SQLite, against plain better-sqlite3 inserting the same rows in one transaction.
//
//   node bench/users-import.js [--users 100000] [--sql-breakdown]
//
// --sql-breakdown times every SQLite statement (and the commits) during the Tessera
// import and prints where the time went; it adds a little overhead, so leave it off
// for the headline figure.
import { createReadStream, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { clearInterval, setInterval } from "node:timers";
import SQLite from "better-sqlite3";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { newId } from "../packages/server/dist/ids.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { userSearchKey } from "../packages/server/dist/modules/users/user.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import {
  benchMasterKey,
  elapsedMs,
  fmt,
  generateUsers,
  intFlag,
  mib,
  now,
  parseFlags,
  printHeader,
  printTable,
  removeDir,
  reportResult,
  tempDir,
  writeUsersCsv,
} from "./lib.js";

const TARGET_USERS_PER_SECOND = 20_000;

const flags = parseFlags(process.argv.slice(2));
const userCount = intFlag(flags, "users", 100_000);
const sqlBreakdown = flags["sql-breakdown"] === true;

/** Bytes this process has passed to write(2) so far (Linux), or null elsewhere. */
function writtenBytes() {
  try {
    const match = /^wchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** @param {number | null} before @param {number | null} after */
const writtenMiB = (before, after) => (before === null || after === null ? null : mib(after - before));

/** Runs the collector when node was started with --expose-gc (run.js does), so RSS starts from a clean heap. */
function collectGarbage() {
  const gc = /** @type {{ gc?: () => void }} */ (globalThis).gc;
  if (gc) gc();
}

/**
 * Wraps better-sqlite3's statement methods to add up the time spent in each SQL text.
 * @returns {{ stats: Map<string, { calls: number, ms: number }>, restore: () => void }}
 */
function instrumentSqlite() {
  const probe = new SQLite(":memory:");
  const Statement = /** @type {{ prototype: Record<string, Function> }} */ (/** @type {unknown} */ (probe.prepare("select 1").constructor));
  probe.close();
  /** @type {Map<string, { calls: number, ms: number }>} */
  const stats = new Map();
  /** @type {Array<[string, Function]>} */
  const originals = [];
  for (const method of ["all", "run", "get", "iterate"]) {
    const original = /** @type {Function} */ (Statement.prototype[method]);
    originals.push([method, original]);
    Statement.prototype[method] = function (/** @type {unknown[]} */ ...args) {
      const start = now();
      try {
        return original.apply(this, args);
      } finally {
        const source = /** @type {{ source: string }} */ (/** @type {unknown} */ (this)).source;
        const key = source.replace(/\?(, \?)+/g, "?…").replace(/\((\?…)\)(, \(\?…\))+/g, "($1), …").slice(0, 90);
        const entry = stats.get(key) ?? { calls: 0, ms: 0 };
        entry.calls += 1;
        entry.ms += elapsedMs(start);
        stats.set(key, entry);
      }
    };
  }
  return {
    stats,
    restore: () => {
      for (const [method, original] of originals) Statement.prototype[method] = original;
    },
  };
}

/** A fresh SQLite database with the real migrations applied and one virtual server. */
async function freshDatabase(/** @type {string} */ dir) {
  const file = path.join(dir, "tessera.db");
  const storage = openStorage({ kind: "sqlite", file });
  await migrateToLatest(storage);
  const services = createServices(storage, createKeyring([benchMasterKey]));
  const vs = await services.virtualServers.create(installerPrincipal, { name: "bench-users" });
  return { file, storage, services, vsId: vs.id };
}

async function measureTessera(/** @type {string} */ csvFile, /** @type {string} */ dir) {
  const { storage, services, vsId, file } = await freshDatabase(dir);
  const probe = new SQLite(file, { readonly: true });
  const journalMode = String(probe.pragma("journal_mode", { simple: true }));
  probe.close();
  collectGarbage();
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  /** @type {Array<{ rows: number, rssMiB: number }>} */
  const rssTrace = [];
  let nextTracePoint = userCount / 10;
  const sample = () => {
    const rss = process.memoryUsage().rss;
    if (rss > rssPeak) rssPeak = rss;
    return rss;
  };
  const sampler = setInterval(sample, 5);
  const instrumentation = sqlBreakdown ? instrumentSqlite() : null;
  const written = writtenBytes();
  const start = now();
  let report;
  try {
    report = await services.importUsers(installerPrincipal, vsId, createReadStream(csvFile), {
      onProgress: (progress) => {
        const rss = sample();
        if (progress.rows >= nextTracePoint) {
          rssTrace.push({ rows: progress.rows, rssMiB: mib(rss) });
          nextTracePoint += userCount / 10;
        }
      },
    });
  } finally {
    clearInterval(sampler);
    instrumentation?.restore();
  }
  const ms = elapsedMs(start);
  const bytesWritten = writtenMiB(written, writtenBytes());
  sample();
  collectGarbage();
  const heapAfterMiB = mib(process.memoryUsage().heapUsed);
  const { count } = /** @type {{ count: number }} */ (
    await storage.db.selectFrom("users").select((eb) => eb.fn.countAll().as("count")).executeTakeFirstOrThrow()
  );
  await storage.close();
  if (report.imported !== userCount || report.failed !== 0 || Number(count) !== userCount) {
    throw new Error(`import incomplete: imported ${report.imported}, failed ${report.failed}, rows ${count}: ${JSON.stringify(report.errors.slice(0, 3))}`);
  }
  return {
    ms,
    usersPerSecond: userCount / (ms / 1000),
    journalMode,
    rssBeforeMiB: mib(rssBefore),
    rssPeakMiB: mib(rssPeak),
    rssTrace,
    heapAfterMiB,
    writtenMiB: bytesWritten,
    databaseMiB: mib(statSync(file).size),
    sqlStats: instrumentation ? [...instrumentation.stats].sort((a, b) => b[1].ms - a[1].ms) : null,
  };
}

/** The baseline: the same users, plain prepared statements, one transaction, same schema and id shape. */
async function measureBaseline(/** @type {string} */ dir) {
  const { storage, vsId, file } = await freshDatabase(dir);
  await storage.close();
  const db = new SQLite(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  const insertUser = db.prepare(
    "insert into users (id, virtual_server_id, user_id, first_name, last_name, email, search_key, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const insertGroup = db.prepare("insert into user_groups (user_pk, virtual_server_id, group_name) values (?, ?, ?)");
  const insertAll = db.transaction(() => {
    const at = Date.now();
    for (const user of generateUsers(userCount)) {
      const id = newId("usr");
      const searchKey = userSearchKey({ user_id: user.userId, first_name: user.firstName, last_name: user.lastName, email: user.email });
      insertUser.run(id, vsId, user.userId, user.firstName, user.lastName, user.email, searchKey, at, at);
      for (const group of user.groups) insertGroup.run(id, vsId, group);
    }
  });
  const written = writtenBytes();
  const start = now();
  insertAll();
  const ms = elapsedMs(start);
  const bytesWritten = writtenMiB(written, writtenBytes());
  const count = /** @type {{ count: number }} */ (db.prepare("select count(*) as count from users").get()).count;
  db.close();
  if (count !== userCount) throw new Error(`baseline inserted ${count} users, not ${userCount}`);
  return { ms, usersPerSecond: userCount / (ms / 1000), writtenMiB: bytesWritten, databaseMiB: mib(statSync(file).size) };
}

async function main() {
  const machineInfo = printHeader("users-import");
  const dir = tempDir("users-import");
  try {
    const csvFile = path.join(dir, "users.csv");
    const csvBytes = await writeUsersCsv(csvFile, userCount);
    const inputs = {
      users: userCount,
      groupsPerUser: "1-3",
      csvMiB: mib(csvBytes),
      database: "sqlite",
      storage: "fresh temp file, WAL, synchronous=NORMAL (the product's openStorage)",
      path: "services.importUsers(installerPrincipal, vsId, fs.createReadStream(file)), default batch size",
    };
    if (flags.pg === true || process.env.BENCH_DATABASE_URL) console.log("note: users-import measures SQLite only; --pg / BENCH_DATABASE_URL are ignored here");
    console.log(`inputs: ${fmt(userCount)} users (1-3 groups each), CSV ${inputs.csvMiB} MiB in a temp dir, fresh SQLite database (WAL)`);

    const tessera = await measureTessera(csvFile, path.join(dir, "tessera"));
    collectGarbage();
    const baseline = await measureBaseline(path.join(dir, "baseline"));

    const pass = tessera.usersPerSecond >= TARGET_USERS_PER_SECOND;
    const ratio = tessera.usersPerSecond / baseline.usersPerSecond;
    console.log();
    printTable([
      ["figure", "value", "target", "result", "baseline (raw better-sqlite3, 1 txn)", "Tessera/baseline"],
      [
        "import throughput",
        `${fmt(tessera.usersPerSecond)} users/s`,
        `>= ${fmt(TARGET_USERS_PER_SECOND)} users/s`,
        pass ? "PASS" : "FAIL",
        `${fmt(baseline.usersPerSecond)} users/s`,
        `${fmt(ratio, 2)}x`,
      ],
      ["elapsed", `${fmt(tessera.ms / 1000, 2)} s`, "", "", `${fmt(baseline.ms / 1000, 2)} s`, `${fmt(tessera.ms / baseline.ms, 2)}x`],
      [
        "written (write(2) bytes)",
        tessera.writtenMiB === null ? "n/a" : `${fmt(tessera.writtenMiB, 1)} MiB`,
        "",
        "",
        baseline.writtenMiB === null ? "n/a" : `${fmt(baseline.writtenMiB, 1)} MiB`,
        tessera.writtenMiB && baseline.writtenMiB ? `${fmt(tessera.writtenMiB / baseline.writtenMiB, 1)}x` : "",
      ],
      ["database file after", `${fmt(tessera.databaseMiB, 1)} MiB`, "", "", `${fmt(baseline.databaseMiB, 1)} MiB`, ""],
      ["RSS before import", `${fmt(tessera.rssBeforeMiB, 1)} MiB`, "", "", "", ""],
      [
        "peak RSS during import",
        `${fmt(tessera.rssPeakMiB, 1)} MiB`,
        "",
        "",
        "",
        `+${fmt(tessera.rssPeakMiB - tessera.rssBeforeMiB, 1)} MiB`,
      ],
    ]);
    console.log(`  journal mode: ${tessera.journalMode}`);
    console.log(`  peak RSS grew ${fmt(tessera.rssPeakMiB - tessera.rssBeforeMiB, 1)} MiB while reading a ${fmt(inputs.csvMiB, 1)} MiB file (${fmt(userCount)} rows); sampled every 5 ms and at every batch`);
    console.log(`  JS heap still in use after the import (after GC): ${fmt(tessera.heapAfterMiB, 1)} MiB`);
    console.log(`  RSS while importing: ${tessera.rssTrace.map((point) => `${fmt(point.rows / 1000)}k→${fmt(point.rssMiB)}`).join("  ")} MiB`);
    if (tessera.sqlStats) {
      const sqlMs = tessera.sqlStats.reduce((sum, [, entry]) => sum + entry.ms, 0);
      console.log(`\n  time inside SQLite during the import (--sql-breakdown): ${fmt(sqlMs)} ms of ${fmt(tessera.ms)} ms`);
      printTable([
        ["ms", "calls", "statement"],
        ...tessera.sqlStats.slice(0, 8).map(([sql, entry]) => [fmt(entry.ms), fmt(entry.calls), sql]),
      ], "    ");
    }

    reportResult({
      name: "users-import",
      machine: machineInfo,
      inputs,
      figures: [
        {
          name: "import throughput",
          value: Math.round(tessera.usersPerSecond),
          unit: "users/s",
          target: { op: ">=", value: TARGET_USERS_PER_SECOND },
          pass,
          baseline: { name: "raw better-sqlite3 prepared statements, one transaction", value: Math.round(baseline.usersPerSecond) },
          ratio: Math.round(ratio * 1000) / 1000,
        },
        { name: "elapsed", value: Math.round(tessera.ms), unit: "ms", baseline: { value: Math.round(baseline.ms) }, ratio: Math.round((tessera.ms / baseline.ms) * 1000) / 1000 },
        { name: "written", value: tessera.writtenMiB, unit: "MiB", baseline: { value: baseline.writtenMiB } },
        { name: "peak RSS", value: tessera.rssPeakMiB, unit: "MiB", rssBeforeMiB: tessera.rssBeforeMiB, heapAfterMiB: tessera.heapAfterMiB, trace: tessera.rssTrace },
      ],
      sqlBreakdown: tessera.sqlStats?.slice(0, 12).map(([sql, entry]) => ({ sql, calls: entry.calls, ms: Math.round(entry.ms) })) ?? null,
      pass,
    });
  } finally {
    removeDir(dir);
  }
}

await main();

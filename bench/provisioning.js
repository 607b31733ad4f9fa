// One provisioning task over 100,000 users on SQLite: tokens bound, enrollments made,
// every enrollment mail's values encrypted and queued in the outbox, all audited, in
// one transaction. Target: at least 10,000 users/s.
//
// Baseline, same process: the same rows (token updates, enrollments, outbox rows with a
// fixed body) written with plain better-sqlite3 prepared statements in one
// transaction: the floor set by SQLite itself (outbox rows of the same size as the
// product's, which keeps the values of an enrollment mail and renders it when sending).
import { createReadStream } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { newId } from "../packages/server/dist/ids.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import { benchMasterKey, elapsedMs, fmt, intFlag, mib, now, parseFlags, printHeader, printTable, removeDir, reportResult, tempDir, writeUsersCsv } from "./lib.js";

const flags = parseFlags(process.argv.slice(2));
const userCount = intFlag(flags, "users", 100_000);
const TARGET_USERS_PER_SECOND = 10_000;

/** A database with a virtual server, its users (through the importer) and as many inventory tokens. */
async function prepare(/** @type {string} */ dir, /** @type {string} */ csvFile) {
  const file = path.join(dir, "tessera.db");
  const storage = openStorage({ kind: "sqlite", file });
  await migrateToLatest(storage);
  const services = createServices(storage, createKeyring([benchMasterKey]), { publicUrl: "https://mfa.example.com" });
  const vs = await services.virtualServers.create(installerPrincipal, { name: "Bench" });
  const report = await services.importUsers(installerPrincipal, vs.id, createReadStream(csvFile));
  if (report.imported !== userCount) throw new Error(`imported ${report.imported} users, not ${userCount}`);
  for (let added = 0; added < userCount; added += 10_000) {
    await services.tokens.add(installerPrincipal, { virtualServerId: vs.id, type: "mobile", count: Math.min(10_000, userCount - added) });
  }
  return { storage, services, vsId: vs.id, file };
}

async function measureTessera(/** @type {string} */ dir, /** @type {string} */ csvFile) {
  const { storage, services, vsId } = await prepare(dir, csvFile);
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 5);
  const start = now();
  const task = await services.provisioning.createTask(installerPrincipal, { virtualServerId: vsId, users: { search: {} }, tokenType: "mobile" });
  const ms = elapsedMs(start);
  clearInterval(sampler);
  // The task's transaction runs on SQLite without yielding to timers: sample after it too.
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  const { db } = storage;
  const count = async (/** @type {"outbox" | "enrollments"} */ table) => Number((await db.selectFrom(table).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
  const [mails, enrollments] = [await count("outbox"), await count("enrollments")];
  await storage.close();
  if (task.counts.total !== userCount || mails !== userCount || enrollments !== userCount) {
    throw new Error(`task incomplete: ${task.counts.total} users, ${mails} mails, ${enrollments} enrollments`);
  }
  return { ms, usersPerSecond: userCount / (ms / 1000), rssBeforeMiB: mib(rssBefore), rssPeakMiB: mib(rssPeak) };
}

async function measureBaseline(/** @type {string} */ dir, /** @type {string} */ csvFile) {
  const { storage, vsId, file } = await prepare(dir, csvFile);
  await storage.close();
  const db = new SQLite(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  const users = /** @type {Array<{ id: string; email: string }>} */ (db.prepare("select id, email from users where virtual_server_id = ? order by user_id").all(vsId));
  const serials = /** @type {Array<{ serial: string }>} */ (db.prepare("select serial from tokens where virtual_server_id = ? and state = 'inventory' order by serial limit ?").all(vsId, userCount));
  const bind = db.prepare("update tokens set state = 'assigned', user_pk = ?, updated_at = ? where serial = ? and state = 'inventory'");
  const enroll = db.prepare(
    "insert into enrollments (id, task_id, virtual_server_id, token_serial, user_pk, code_hash, apps, status, expires_at, created_at, updated_at) values (?, null, ?, ?, ?, ?, '[\"tessera\"]', 'pending', ?, ?, ?)",
  );
  const mail = db.prepare(
    "insert into outbox (id, virtual_server_id, kind, recipient, subject, body_ciphertext, body_key_id, status, attempts, next_attempt_at, message_id, enrollment_id, created_at) values (?, ?, 'enrollment', ?, 'Set up your token', ?, 'k', 'queued', 0, ?, ?, ?, ?)",
  );
  // About the size of what the outbox keeps of an enrollment mail: its values, encrypted.
  const body = "x".repeat(400);
  const start = now();
  db.transaction(() => {
    const at = Date.now();
    users.forEach((user, i) => {
      const serial = /** @type {{ serial: string }} */ (serials[i]).serial;
      bind.run(user.id, at, serial);
      const enrollmentId = newId("enr");
      enroll.run(enrollmentId, vsId, serial, user.id, `${enrollmentId}-hash`, at + 7 * 86_400_000, at, at);
      const mailId = newId("mail");
      mail.run(mailId, vsId, user.email, body, at, `<${mailId}@tessera>`, enrollmentId, at);
    });
  })();
  const ms = elapsedMs(start);
  db.close();
  return { ms, usersPerSecond: userCount / (ms / 1000) };
}

async function main() {
  const machineInfo = printHeader("provisioning");
  const dir = tempDir("provisioning");
  try {
    const csvFile = path.join(dir, "users.csv");
    await writeUsersCsv(csvFile, userCount);
    console.log(`inputs: one task over ${fmt(userCount)} users and ${fmt(userCount)} inventory mobile tokens, fresh SQLite database (WAL); each user's mail rendered, encrypted and queued`);
    const tessera = await measureTessera(path.join(dir, "tessera"), csvFile);
    const baseline = await measureBaseline(path.join(dir, "baseline"), csvFile);
    const pass = tessera.usersPerSecond >= TARGET_USERS_PER_SECOND;
    console.log();
    printTable([
      ["figure", "value", "target", "result", "baseline (raw statements, 1 txn)", "Tessera/baseline"],
      ["provisioning throughput", `${fmt(tessera.usersPerSecond)} users/s`, `>= ${fmt(TARGET_USERS_PER_SECOND)} users/s`, pass ? "PASS" : "FAIL", `${fmt(baseline.usersPerSecond)} users/s`, `${fmt(tessera.usersPerSecond / baseline.usersPerSecond, 2)}x`],
      ["elapsed", `${fmt(tessera.ms / 1000, 2)} s`, "", "", `${fmt(baseline.ms / 1000, 2)} s`, ""],
      ["peak RSS during the task", `${fmt(tessera.rssPeakMiB, 1)} MiB`, "", "", "", `+${fmt(tessera.rssPeakMiB - tessera.rssBeforeMiB, 1)} MiB`],
    ]);
    reportResult({
      name: "provisioning",
      machine: machineInfo,
      inputs: { users: userCount, database: "sqlite", path: "services.provisioning.createTask(installerPrincipal, { users: { search: {} }, tokenType: 'mobile' })" },
      figures: [
        { name: "provisioning throughput", value: Math.round(tessera.usersPerSecond), unit: "users/s", target: { op: ">=", value: TARGET_USERS_PER_SECOND }, pass, baseline: { name: "raw better-sqlite3 statements, one transaction", value: Math.round(baseline.usersPerSecond) }, ratio: tessera.usersPerSecond / baseline.usersPerSecond },
        { name: "peak RSS", value: tessera.rssPeakMiB, unit: "MiB", baseline: { name: "RSS before", value: tessera.rssBeforeMiB } },
      ],
    });
  } finally {
    removeDir(dir);
  }
}

await main();

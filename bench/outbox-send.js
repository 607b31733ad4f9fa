// Benchmark: sending enrollment mail through the outbox. Queues mails on SQLite the
// way provisioning does (rendered default template, encrypted bodies, multi-row
// inserts in one transaction), then lets the real worker send them over the product's
// pooled SMTP transport to a local SMTP server, against nodemailer sending the same
// messages straight from memory over the same kind of pool.
//
//   node bench/outbox-send.js [--mails 5000] [--batch-size N]
//
// --batch-size sets the worker's batch (default: the product's default, 100).
//
// The SMTP server (smtp-server, accepting and discarding every message) runs in a
// child process, so that its parsing does not share an event loop with the sender.
import { fork } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { SMTPServer } from "smtp-server";
import { systemClock } from "../packages/server/dist/clock.js";
import { createServices } from "../packages/server/dist/core.js";
import { createKeyring } from "../packages/server/dist/crypto/keyring.js";
import { queueMails } from "../packages/server/dist/modules/mail/outbox.js";
import { defaultEnrollmentTemplate, renderEnrollmentMail } from "../packages/server/dist/modules/mail/templates.js";
import { createMailTransport, SMTP_POOL_CONNECTIONS } from "../packages/server/dist/modules/mail/transport.js";
import { createMailWorker } from "../packages/server/dist/modules/mail/worker.js";
import { installerPrincipal } from "../packages/server/dist/modules/operators/access.js";
import { openStorage } from "../packages/server/dist/storage/database.js";
import { migrateToLatest } from "../packages/server/dist/storage/migrate.js";
import { benchMasterKey, elapsedMs, fmt, generateUsers, intFlag, now, parseFlags, printHeader, printTable, removeDir, reportResult, tempDir } from "./lib.js";

const TARGET_MAILS_PER_SECOND = 500;
const FROM = "Tessera <no-reply@bench.test>";
const WARMUP_MAILS = 200;

const flags = parseFlags(process.argv.slice(2));
const mailCount = intFlag(flags, "mails", 5000);
const batchSize = flags["batch-size"] === undefined ? undefined : intFlag(flags, "batch-size", 100);

/** The child: an SMTP server on 127.0.0.1 that accepts every message, counts it and throws it away. */
async function runSink() {
  let accepted = 0;
  const server = new SMTPServer({
    disabledCommands: ["STARTTLS", "AUTH"],
    authOptional: true,
    logger: false,
    closeTimeout: 100,
    onData(stream, _session, callback) {
      stream.on("end", () => {
        accepted += 1;
        callback();
      });
      stream.resume();
    },
  });
  server.on("error", () => undefined);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = /** @type {import("node:net").AddressInfo} */ (server.server.address());
  process.on("message", (/** @type {unknown} */ message) => {
    if (message === "count") process.send?.({ accepted });
    if (message === "stop") server.close(() => process.exit(0));
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({ port: address.port });
}

/**
 * Starts the sink and returns its port and a way to read how many messages it took.
 * @returns {Promise<{ port: number, accepted: () => Promise<number>, stop: () => void }>}
 */
async function startSink() {
  const child = fork(fileURLToPath(import.meta.url), ["--sink"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  /** @type {Array<(value: number) => void>} */
  const waiting = [];
  const port = await new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the SMTP sink exited with ${code}`)));
    child.on("message", (/** @type {{ port?: number, accepted?: number }} */ message) => {
      if (message.port !== undefined) resolve(message.port);
      if (message.accepted !== undefined) waiting.shift()?.(message.accepted);
    });
  });
  child.removeAllListeners("exit");
  return {
    port: /** @type {number} */ (port),
    accepted: () =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.send("count");
      }),
    stop: () => {
      if (child.connected) child.send("stop");
      setTimeout(() => child.kill("SIGKILL"), 2000).unref();
    },
  };
}

/**
 * Waits (bounded) until the sink has taken `expected` messages in all.
 * @param {() => Promise<number>} accepted @param {number} expected
 */
async function sinkReaches(accepted, expected) {
  for (let poll = 0; poll < 500; poll += 1) {
    const count = await accepted();
    if (count >= expected) return count;
    await sleep(10);
  }
  return accepted();
}

/** The mails of the benchmark, rendered from the default template as provisioning does. */
function renderMails(/** @type {string} */ vsId, /** @type {number} */ count) {
  const mails = [];
  const expiresAt = Date.now() + 7 * 86_400_000;
  let index = 0;
  for (const user of generateUsers(count)) {
    index += 1;
    const code = `BENCH${String(index).padStart(21, "0")}`;
    mails.push({
      virtualServerId: vsId,
      kind: "enrollment",
      to: user.email,
      enrollmentId: null,
      ...renderEnrollmentMail(defaultEnrollmentTemplate, {
        firstName: user.firstName,
        lastName: user.lastName,
        userId: user.userId,
        virtualServerName: "Bench",
        enrollUrl: `https://mfa.bench.test/enroll/${code}`,
        expiresAt,
        serial: `MP${String(index).padStart(10, "0")}`,
      }),
    });
  }
  return mails;
}

/**
 * The baseline: nodemailer sends the messages straight from memory, as many at once as the
 * worker hands its transport (two per pooled connection); no database, no encryption.
 * @param {number} port @param {Array<{ to: string, subject: string, text: string, html: string }>} mails
 */
async function sendDirect(port, mails) {
  const transport = /** @type {import("nodemailer").Transporter} */ (createMailTransport({ smtpUrl: `smtp://127.0.0.1:${port}`, from: FROM }));
  let next = 0;
  const lane = async () => {
    while (next < mails.length) {
      const i = next++;
      const mail = /** @type {{ to: string, subject: string, text: string, html: string }} */ (mails[i]);
      await transport.sendMail({
        from: FROM,
        to: { name: "", address: mail.to },
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        messageId: `<direct-${i}@bench>`,
        headers: { "Auto-Submitted": "auto-generated" },
      });
    }
  };
  const start = now();
  await Promise.all(Array.from({ length: 2 * SMTP_POOL_CONNECTIONS }, lane));
  const ms = elapsedMs(start);
  transport.close();
  return { ms, mailsPerSecond: mails.length / (ms / 1000) };
}

async function main() {
  const machineInfo = printHeader("outbox-send");
  const dir = tempDir("outbox-send");
  const sink = await startSink();
  /** @type {import("../packages/server/dist/storage/database.js").Storage | undefined} */
  let storage;
  const interrupted = () => {
    sink.stop();
    removeDir(dir);
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    if (flags.pg === true || process.env.BENCH_DATABASE_URL) console.log("note: outbox-send measures SQLite only; --pg / BENCH_DATABASE_URL are ignored here");
    const inputs = {
      mails: mailCount,
      database: "sqlite",
      storage: "fresh temp file, WAL, synchronous=NORMAL (the product's openStorage)",
      smtp: "smtp-server in a child process on 127.0.0.1, accepting and discarding every message",
      transport: `the product's pooled transport (createMailTransport): ${SMTP_POOL_CONNECTIONS} connections`,
      path: "queueMails in one transaction, then createMailWorker(...).runOnce() until the outbox is empty",
    };
    console.log(`inputs: ${fmt(mailCount)} enrollment mails (default template), SQLite in a temp dir, SMTP sink in a child process on port ${sink.port}`);

    storage = openStorage({ kind: "sqlite", file: path.join(dir, "tessera.db") });
    await migrateToLatest(storage);
    const keyring = createKeyring([benchMasterKey]);
    const services = createServices(storage, keyring);
    const vs = await services.virtualServers.create(installerPrincipal, { name: "bench-mail" });
    const mails = renderMails(vs.id, mailCount);
    const averageBytes = mails.reduce((sum, mail) => sum + mail.text.length + mail.html.length, 0) / mails.length;

    // Warm-up, not measured: connections, JIT, the sink's first messages.
    await sendDirect(sink.port, mails.slice(0, WARMUP_MAILS));
    let expected = WARMUP_MAILS;

    const queueStart = now();
    const db = storage.db;
    await db.transaction().execute((trx) => queueMails(trx, { keyring, clock: systemClock }, mails));
    const queueMs = elapsedMs(queueStart);

    const transport = createMailTransport({ smtpUrl: `smtp://127.0.0.1:${sink.port}`, from: FROM });
    const worker = createMailWorker({ db, keyring, clock: systemClock, transport, from: FROM, batchSize });
    const sendStart = now();
    const result = await worker.runOnce();
    const sendMs = elapsedMs(sendStart);
    transport?.close();
    expected += mailCount;
    const afterTessera = await sinkReaches(sink.accepted, expected);
    const rows = await db
      .selectFrom("outbox")
      .select(["status", (eb) => eb.fn.countAll().as("count"), (eb) => eb.fn.count("body_ciphertext").as("bodies")])
      .groupBy("status")
      .execute();
    if (result.sent !== mailCount || afterTessera !== expected || rows.length !== 1 || rows[0]?.status !== "sent" || Number(rows[0]?.bodies) !== 0) {
      throw new Error(`outbox not sent cleanly: ${JSON.stringify({ result, accepted: afterTessera, expected, rows })}`);
    }
    const tessera = { ms: sendMs, mailsPerSecond: mailCount / (sendMs / 1000) };

    const baseline = await sendDirect(sink.port, mails);
    expected += mailCount;
    const afterBaseline = await sinkReaches(sink.accepted, expected);
    if (afterBaseline !== expected) throw new Error(`baseline: the sink took ${afterBaseline} messages, expected ${expected}`);

    const pass = tessera.mailsPerSecond >= TARGET_MAILS_PER_SECOND;
    const ratio = tessera.mailsPerSecond / baseline.mailsPerSecond;
    const queuedPerSecond = mailCount / (queueMs / 1000);
    console.log();
    printTable([
      ["figure", "value", "target", "result", "baseline (nodemailer from memory, no outbox)", "Tessera/baseline"],
      ["send throughput", `${fmt(tessera.mailsPerSecond)} mails/s`, `>= ${fmt(TARGET_MAILS_PER_SECOND)} mails/s`, pass ? "PASS" : "FAIL", `${fmt(baseline.mailsPerSecond)} mails/s`, `${fmt(ratio, 2)}x`],
      ["send elapsed", `${fmt(tessera.ms / 1000, 2)} s`, "", "", `${fmt(baseline.ms / 1000, 2)} s`, `${fmt(tessera.ms / baseline.ms, 2)}x`],
      ["queueing (queueMails, 1 txn)", `${fmt(queuedPerSecond)} mails/s`, "", "", "", ""],
    ]);
    console.log(`  ${fmt(mailCount)} mails of ${fmt(averageBytes / 1024, 1)} KiB (text + HTML) each; worker: batches of ${batchSize ?? 100}, ${2 * SMTP_POOL_CONNECTIONS} sends in flight; all rows sent, every body wiped`);

    reportResult({
      name: "outbox-send",
      machine: machineInfo,
      inputs,
      figures: [
        {
          name: "send throughput",
          value: Math.round(tessera.mailsPerSecond),
          unit: "mails/s",
          target: { op: ">=", value: TARGET_MAILS_PER_SECOND },
          pass,
          baseline: { name: "nodemailer pooled transport sending the same messages from memory, no outbox", value: Math.round(baseline.mailsPerSecond) },
          ratio: Math.round(ratio * 1000) / 1000,
        },
        { name: "send elapsed", value: Math.round(tessera.ms), unit: "ms", baseline: { value: Math.round(baseline.ms) }, ratio: Math.round((tessera.ms / baseline.ms) * 1000) / 1000 },
        { name: "queueing", value: Math.round(queuedPerSecond), unit: "mails/s" },
      ],
      pass,
    });
  } finally {
    await storage?.close().catch(() => undefined);
    sink.stop();
    removeDir(dir);
    process.removeListener("SIGINT", interrupted);
    process.removeListener("SIGTERM", interrupted);
  }
}

if (flags.sink === true) await runSink();
else await main();

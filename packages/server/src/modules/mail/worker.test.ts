import nodemailer from "nodemailer";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { openStorage, type Storage } from "../../storage/database.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { installerPrincipal } from "../operators/access.js";
import { queueMail, queueMails, type MailToQueue, type RenderedMailToQueue } from "./outbox.js";
import { closedPort, startTestSmtpServer, type TestSmtpServer } from "./test-smtp-server.js";
import { createMailTransport, type MailTransport } from "./transport.js";
import { createMailWorker, describeSendError, isPermanentRejection, retryDelayMs, type MailLogger, type MailWorkerOptions } from "./worker.js";

const FROM = "Tessera <no-reply@tessera.test>";
const secretCode = "K7QXW3MZ2ABCDEFGHJKLMNPQRS";
const link = `https://mfa.example.com/enroll/${secretCode}`;

function mail(to: string, overrides: Partial<RenderedMailToQueue> = {}): RenderedMailToQueue {
  return {
    virtualServerId: null,
    kind: "enrollment",
    to,
    subject: `Set up your login token (${to})`,
    text: `Hello,\n\nOpen ${link} to set up your token.\n`,
    html: `<p>Hello,</p><p><a href="${link}">Set up my token</a></p>`,
    ...overrides,
  };
}

/** A nodemailer pool to the test server, as createMailTransport makes it. */
function poolTo(port: number): MailTransport {
  return createMailTransport({ smtpUrl: `smtp://127.0.0.1:${port}`, from: FROM })!;
}

function recordingLogger() {
  const lines: Array<{ level: string; fields: object; message: string }> = [];
  const logger: MailLogger = {
    info: (fields, message) => lines.push({ level: "info", fields, message }),
    warn: (fields, message) => lines.push({ level: "warn", fields, message }),
    error: (fields, message) => lines.push({ level: "error", fields, message }),
  };
  return { lines, logger };
}

describe("retry schedule", () => {
  it("doubles from 30 s to a cap of one hour", () => {
    const middle = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 7, 8, 12].map((attempt) => retryDelayMs(attempt, middle))).toEqual([
      30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000,
    ]);
  });

  it("spreads retries by up to 20 % either way, never past the cap", () => {
    expect(retryDelayMs(1, () => 0)).toBe(24_000);
    expect(retryDelayMs(1, () => 0.999999)).toBe(36_000);
    expect(retryDelayMs(20, () => 0.999999)).toBe(3_600_000);
  });

  it("treats only a 5xx answer to RCPT TO as permanent", () => {
    expect(isPermanentRejection({ responseCode: 550, command: "RCPT TO" })).toBe(true);
    expect(isPermanentRejection({ responseCode: 450, command: "RCPT TO" })).toBe(false);
    expect(isPermanentRejection({ responseCode: 535, command: "AUTH PLAIN" })).toBe(false);
    expect(isPermanentRejection(Object.assign(new Error("connect ECONNREFUSED"), { code: "ESOCKET" }))).toBe(false);
    expect(describeSendError(Object.assign(new Error("Greeting never received\n"), { code: "ETIMEDOUT" }))).toBe("ETIMEDOUT: Greeting never received ");
  });
});

describeEachDatabase("mail worker against a real SMTP server", (kind) => {
  let core: TestCore;
  let vsId: string;
  let smtp: TestSmtpServer;
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    core = await createTestCore(kind);
    vsId = (await core.services.virtualServers.create(installerPrincipal, { name: "Mail" })).id;
    smtp = await startTestSmtpServer({ rejectRecipient: (address) => address.startsWith("nobody@") });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    // Each test starts with an empty outbox and server.
    await core.storage.db.deleteFrom("outbox").execute();
    smtp.received.length = 0;
  });
  afterAll(async () => {
    await smtp.close();
    await core.close();
  });

  function worker(options: Partial<MailWorkerOptions> & { transport: MailTransport | null }) {
    const created = createMailWorker({ db: core.storage.db, keyring: core.services.keyring, clock: core.clock, from: FROM, ...options });
    cleanups.push(() => created.stop());
    return created;
  }

  function transport(port = smtp.port): MailTransport {
    const created = poolTo(port);
    cleanups.push(() => created.close());
    return created;
  }

  async function queue(...mails: MailToQueue[]): Promise<string[]> {
    const ids = await core.storage.db.transaction().execute((trx) => queueMails(trx, { keyring: core.services.keyring, clock: core.clock }, mails));
    return ids.map((entry) => entry.id);
  }

  const row = (id: string) => core.storage.db.selectFrom("outbox").selectAll().where("id", "=", id).executeTakeFirstOrThrow();

  it("sends a queued mail once, with its From, To, Subject, Message-ID, text and HTML", async () => {
    const [id] = await queue(mail("anna@example.com", { virtualServerId: vsId }));
    const sender = worker({ transport: transport() });

    expect(await sender.runOnce()).toEqual({ sent: 1, retried: 0, failed: 0 });
    expect(smtp.received).toHaveLength(1);
    const [received] = smtp.received;
    expect(received!.envelopeTo).toEqual(["anna@example.com"]);
    expect(received!.envelopeFrom).toBe("no-reply@tessera.test");
    const parsed = received!.parsed;
    expect(parsed.from?.text).toBe('"Tessera" <no-reply@tessera.test>');
    expect(parsed.from?.value).toEqual([{ name: "Tessera", address: "no-reply@tessera.test" }]);
    expect(Array.isArray(parsed.to) ? parsed.to : [parsed.to]).toMatchObject([{ value: [{ address: "anna@example.com" }] }]);
    expect(parsed.subject).toBe("Set up your login token (anna@example.com)");
    expect(parsed.messageId).toBe(`<${id}@tessera>`);
    expect(parsed.text).toBe(mail("x@example.com").text);
    expect(parsed.html).toBe(mail("x@example.com").html);
    expect(parsed.headers.get("auto-submitted")).toBe("auto-generated");

    expect(await row(id!)).toMatchObject({ status: "sent", attempts: 1, sent_at: core.clock.nowMs(), lease_until: null, last_error: null });
    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
    expect(smtp.received).toHaveLength(1);
  });

  it("wipes the body once sent and never stores the link in the clear", async () => {
    const [id] = await queue(mail("bernard@example.com"));
    const queued = await row(id!);
    expect(queued.body_ciphertext).not.toBeNull();
    expect(JSON.stringify(queued)).not.toContain(secretCode);

    await worker({ transport: transport() }).runOnce();
    const sent = await row(id!);
    expect(sent).toMatchObject({ status: "sent", body_ciphertext: null, body_key_id: null });
    expect(JSON.stringify(sent)).not.toContain(secretCode);
    expect(smtp.received[0]!.parsed.text).toContain(link);
  });

  it("keeps mail through an SMTP server that is down, retrying with backoff, then sends each exactly once", async () => {
    const port = await closedPort();
    const ids = await queue(mail("chloe@example.com"), mail("david@example.com"));
    const { lines, logger } = recordingLogger();
    const sender = worker({ transport: transport(port), logger, random: () => 0.5 });
    const start = core.clock.nowMs();

    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 2, failed: 0 });
    for (const id of ids) {
      const first = await row(id);
      expect(first).toMatchObject({ status: "queued", attempts: 1, next_attempt_at: start + 30_000, lease_until: null });
      expect(first.last_error).toMatch(/ECONNREFUSED/);
      expect(first.body_ciphertext).not.toBeNull();
    }
    // Not due yet: nothing is tried.
    core.clock.advance(29_000);
    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });

    core.clock.advance(1_000);
    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 2, failed: 0 });
    expect(await row(ids[0]!)).toMatchObject({ attempts: 2, next_attempt_at: core.clock.nowMs() + 60_000 });

    // The server comes back on the same port; the same transport reconnects.
    const revived = await startTestSmtpServer({ port });
    cleanups.push(() => revived.close());
    core.clock.advance(60_000);
    expect(await sender.runOnce()).toEqual({ sent: 2, retried: 0, failed: 0 });
    core.clock.advance(3_600_000);
    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
    expect(revived.received.map((m) => m.envelopeTo[0]).sort()).toEqual(["chloe@example.com", "david@example.com"]);
    for (const id of ids) expect(await row(id)).toMatchObject({ status: "sent", attempts: 3 });

    // The log tells what happened without the body or the link.
    expect(lines.filter((line) => line.level === "warn")).toHaveLength(4);
    expect(JSON.stringify(lines)).not.toContain(secretCode);
    expect(JSON.stringify(lines)).not.toContain("Hello");
  });

  it("gives a mail up as failed after the last attempt", async () => {
    const [id] = await queue(mail("emma@example.com"));
    const sender = worker({ transport: transport(await closedPort()), maxAttempts: 3 });
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      const result = await sender.runOnce();
      expect(result).toEqual(attempt < 3 ? { sent: 0, retried: 1, failed: 0 } : { sent: 0, retried: 0, failed: 1 });
      core.clock.advance(3_600_000);
    }
    expect(await row(id!)).toMatchObject({ status: "failed", attempts: 3 });
    expect(await sender.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
  });

  it("fails a mail at once when the server rejects its recipient for good, and sends the others", async () => {
    const [rejected, fine] = await queue(mail("nobody@example.com"), mail("francois@example.com"));
    const { lines, logger } = recordingLogger();
    expect(await worker({ transport: transport(), logger }).runOnce()).toEqual({ sent: 1, retried: 0, failed: 1 });
    const failed = await row(rejected!);
    expect(failed).toMatchObject({ status: "failed", attempts: 1, lease_until: null });
    expect(failed.last_error).toMatch(/550/);
    expect(failed.last_error).toMatch(/No such user/);
    // Kept (encrypted) so that an operator can still hand the link over another way.
    expect(failed.body_ciphertext).not.toBeNull();
    expect(await row(fine!)).toMatchObject({ status: "sent" });
    expect(smtp.received.map((m) => m.envelopeTo[0])).toEqual(["francois@example.com"]);
    expect(lines.find((line) => line.level === "error")?.message).toBe("mail rejected by the SMTP server");
  });

  it("resends the mail of a worker that stopped mid-send, under the same Message-ID, once its lease has run out", async () => {
    const [id] = await queue(mail("gabriel@example.com"));
    const real = transport();
    // This worker's node "dies" after the server took the mail, before it could record it.
    let delivered = false;
    const dying = {
      sendMail: async (message: Parameters<MailTransport["sendMail"]>[0]) => {
        await real.sendMail(message);
        delivered = true;
        return new Promise<never>(() => undefined);
      },
    } as unknown as MailTransport;
    void createMailWorker({ db: core.storage.db, keyring: core.services.keyring, clock: core.clock, from: FROM, transport: dying }).runOnce();
    await vi.waitFor(() => expect(delivered).toBe(true), { timeout: 10_000, interval: 10 });
    expect(smtp.received).toHaveLength(1);
    expect(await row(id!)).toMatchObject({ status: "sending", attempts: 1, lease_until: core.clock.nowMs() + 60_000 });

    const survivor = worker({ transport: transport() });
    // Within the lease the mail belongs to the first worker.
    core.clock.advance(59_000);
    expect(await survivor.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
    core.clock.advance(2_000);
    expect(await survivor.runOnce()).toEqual({ sent: 1, retried: 0, failed: 0 });

    expect(smtp.received).toHaveLength(2);
    expect(smtp.received[1]!.parsed.messageId).toBe(`<${id}@tessera>`);
    expect(smtp.received[1]!.parsed.messageId).toBe(smtp.received[0]!.parsed.messageId);
    expect(await row(id!)).toMatchObject({ status: "sent", attempts: 2, body_ciphertext: null });
  });

  it("hands back the mails it could not start before its lease would run out, and sends them in a later batch", async () => {
    const ids = await queue(mail("olivier@example.com"), mail("paul@example.com"), mail("quentin@example.com"));
    const real = transport();
    // Every send takes 20 s of the test clock: after the first, the other two would outlive their claim.
    const slow = {
      sendMail: async (message: Parameters<MailTransport["sendMail"]>[0]) => {
        const info = await real.sendMail(message);
        core.clock.advance(20_000);
        return info;
      },
    } as unknown as MailTransport;
    expect(await worker({ transport: slow, batchSize: 3, concurrency: 1 }).runOnce()).toEqual({ sent: 3, retried: 0, failed: 0 });
    expect(smtp.received).toHaveLength(3);
    for (const id of ids) expect(await row(id)).toMatchObject({ status: "sent", attempts: 1 });
  });

  it("takes over a row left in sending with an expired lease", async () => {
    const [id] = await queue(mail("helene@example.com"));
    await core.storage.db.updateTable("outbox").set({ status: "sending", attempts: 1, lease_until: core.clock.nowMs() - 1 }).where("id", "=", id!).execute();
    expect(await worker({ transport: transport() }).runOnce()).toEqual({ sent: 1, retried: 0, failed: 0 });
    expect(smtp.received[0]!.parsed.messageId).toBe(`<${id}@tessera>`);
    expect(await row(id!)).toMatchObject({ status: "sent", attempts: 2 });
  });

  it("sends each mail exactly once when two workers on separate connections run at the same time", async () => {
    const count = 60;
    const ids = await queue(...Array.from({ length: count }, (_, i) => mail(`user${i}@example.com`)));
    const second: Storage = openStorage(core.database.target);
    cleanups.push(() => second.close());
    const a = worker({ transport: transport(), batchSize: 7 });
    const b = createMailWorker({ db: second.db, keyring: core.services.keyring, clock: core.clock, from: FROM, transport: transport(), batchSize: 7 });
    const [resultA, resultB] = await Promise.all([a.runOnce(), b.runOnce()]);

    expect(resultA.sent + resultB.sent).toBe(count);
    expect(resultA.retried + resultA.failed + resultB.retried + resultB.failed).toBe(0);
    const recipients = smtp.received.map((m) => m.envelopeTo[0]);
    expect(recipients).toHaveLength(count);
    expect(new Set(recipients).size).toBe(count);
    const messageIds = new Set(smtp.received.map((m) => m.parsed.messageId));
    expect(messageIds).toEqual(new Set(ids.map((id) => `<${id}@tessera>`)));
    const statuses = await core.storage.db.selectFrom("outbox").select("status").distinct().execute();
    expect(statuses).toEqual([{ status: "sent" }]);
  });

  it("never sends a cancelled mail", async () => {
    const [id] = await queue(mail("ines@example.com", { enrollmentId: "enr_gone" }));
    await core.storage.db.updateTable("outbox").set({ status: "cancelled", body_ciphertext: null, body_key_id: null }).where("id", "=", id!).execute();
    expect(await worker({ transport: transport() }).runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
    expect(smtp.received).toHaveLength(0);
  });

  it("without an SMTP server keeps every mail queued in the outbox", async () => {
    const [id] = await queue(mail("jules@example.com"));
    const idle = worker({ transport: null });
    idle.start();
    expect(await idle.runOnce()).toEqual({ sent: 0, retried: 0, failed: 0 });
    expect(await row(id!)).toMatchObject({ status: "queued", attempts: 0 });
  });

  it("polls once started, sends at once on notify, and stops after recording what it sent", async () => {
    const sender = worker({ transport: transport(), pollIntervalMs: 60_000 });
    sender.start();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { id } = await core.storage.db
      .transaction()
      .execute((trx) => queueMail(trx, { keyring: core.services.keyring, clock: core.clock }, mail("karim@example.com")));
    // The next poll is a minute away: only notify() gets this mail out in time.
    sender.notify();
    await smtp.waitFor(1, 5_000);
    await sender.stop();
    expect(await row(id)).toMatchObject({ status: "sent" });
  });

  it("authenticates with the credentials of TESSERA_SMTP_URL over a pooled transport", async () => {
    const secured = await startTestSmtpServer({ auth: { user: "tessera", pass: "p@ss word" } });
    cleanups.push(() => secured.close());
    const pooled = createMailTransport({ smtpUrl: `smtp://tessera:${encodeURIComponent("p@ss word")}@127.0.0.1:${secured.port}`, from: FROM })!;
    cleanups.push(() => pooled.close());
    expect(pooled.transporter.name).toBe("SMTP (pool)");
    await queue(mail("lea@example.com"));
    expect(await worker({ transport: pooled }).runOnce()).toEqual({ sent: 1, retried: 0, failed: 0 });
    expect(secured.received[0]!.user).toBe("tessera");

    // Wrong credentials are the operator's to fix: retried, not failed.
    const wrong = nodemailer.createTransport({ url: `smtp://tessera:wrong@127.0.0.1:${secured.port}`, pool: true });
    cleanups.push(() => wrong.close());
    await queue(mail("marc@example.com"));
    expect(await worker({ transport: wrong }).runOnce()).toEqual({ sent: 0, retried: 1, failed: 0 });
  });
});

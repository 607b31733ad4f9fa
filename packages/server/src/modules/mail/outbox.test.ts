import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeyring } from "../../crypto/keyring.js";
import { createTestCore, describeEachDatabase, testMasterKey, type TestCore } from "../../testing/databases.js";
import { installerPrincipal } from "../operators/access.js";
import { cancelMailsForEnrollment, extractEnrollUrl, queueMail, queueMails, readMail, type RenderedMailToQueue } from "./outbox.js";

const link = "https://mfa.example.com/enroll/Zx9kQ2vB7nR4tY1wE3uI5o";

function enrollmentMail(overrides: Partial<RenderedMailToQueue> = {}): RenderedMailToQueue {
  return {
    virtualServerId: null,
    kind: "enrollment",
    to: "anna.martin@example.com",
    subject: "Set up your login token",
    text: `Hello Anna,\n\nOpen ${link} to set up your token.\n`,
    html: `<p>Hello Anna,</p><p><a href="${link}">Set up my token</a></p>`,
    enrollmentId: null,
    ...overrides,
  };
}

describeEachDatabase("mail outbox", (kind) => {
  let core: TestCore;
  let vsId: string;
  const deps = () => ({ keyring: core.services.keyring, clock: core.clock });

  beforeAll(async () => {
    core = await createTestCore(kind);
    vsId = (await core.services.virtualServers.create(installerPrincipal, { name: "Outbox" })).id;
  });
  afterAll(async () => core.close());

  it("queues a mail due now, with a Message-ID fixed at queue time and the bodies encrypted", async () => {
    const { db } = core.storage;
    const { id } = await db.transaction().execute((trx) => queueMail(trx, deps(), enrollmentMail({ virtualServerId: vsId, enrollmentId: "enr_1" })));
    const row = await db.selectFrom("outbox").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({
      virtual_server_id: vsId,
      kind: "enrollment",
      recipient: "anna.martin@example.com",
      subject: "Set up your login token",
      status: "queued",
      attempts: 0,
      next_attempt_at: core.clock.nowMs(),
      created_at: core.clock.nowMs(),
      lease_until: null,
      sent_at: null,
      enrollment_id: "enr_1",
      message_id: `<${id}@tessera>`,
      body_key_id: core.services.keyring.currentKeyId,
    });
    // Nothing of the link is stored in the clear, in any column.
    expect(JSON.stringify(row)).not.toContain("Zx9kQ2vB7nR4tY1wE3uI5o");
    expect(JSON.stringify(row)).not.toContain("Hello Anna");
    expect(readMail(row, core.services.keyring)).toEqual({ text: enrollmentMail().text, html: enrollmentMail().html });
  });

  it("binds a body to its row: a ciphertext copied onto another mail does not decrypt", async () => {
    const { db } = core.storage;
    const [a, b] = await db.transaction().execute((trx) => queueMails(trx, deps(), [enrollmentMail(), enrollmentMail({ text: "other" })]));
    const rowA = await db.selectFrom("outbox").selectAll().where("id", "=", a!.id).executeTakeFirstOrThrow();
    expect(() => readMail({ ...rowA, id: b!.id }, core.services.keyring)).toThrow();
    expect(() => readMail(rowA, createKeyring([Buffer.alloc(32, 9), testMasterKey]))).not.toThrow();
  });

  it("queues nothing when the provisioning transaction rolls back", async () => {
    const { db } = core.storage;
    const before = await db.selectFrom("outbox").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    await expect(
      db.transaction().execute(async (trx) => {
        await queueMail(trx, deps(), enrollmentMail({ subject: "rolled back" }));
        throw new Error("provisioning failed");
      }),
    ).rejects.toThrow("provisioning failed");
    const after = await db.selectFrom("outbox").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });

  it("queues a large batch in multi-row chunks and returns the ids in order", async () => {
    const { db } = core.storage;
    const mails = Array.from({ length: 1234 }, (_, i) => enrollmentMail({ virtualServerId: vsId, to: `user${i}@example.com`, subject: `batch ${i}` }));
    const ids = await db.transaction().execute((trx) => queueMails(trx, deps(), mails));
    expect(ids).toHaveLength(1234);
    expect(new Set(ids.map((entry) => entry.id)).size).toBe(1234);
    const rows = await db.selectFrom("outbox").select(["id", "recipient", "subject", "message_id"]).where("subject", "like", "batch %").execute();
    expect(rows).toHaveLength(1234);
    const byId = new Map(rows.map((row) => [row.id, row]));
    ids.forEach((entry, i) => {
      expect(byId.get(entry.id)).toMatchObject({ recipient: `user${i}@example.com`, subject: `batch ${i}`, message_id: `<${entry.id}@tessera>` });
    });
  });

  it("keeps a subject on one line and refuses anything but one address", async () => {
    const { db } = core.storage;
    const { id } = await db.transaction().execute((trx) => queueMail(trx, deps(), enrollmentMail({ subject: "Hello\r\nBcc: evil@example.com" })));
    const row = await db.selectFrom("outbox").select("subject").where("id", "=", id).executeTakeFirstOrThrow();
    expect(row.subject).toBe("Hello Bcc: evil@example.com");
    for (const to of ["a@example.com, b@example.com", "Anna <a@example.com>", "a@example.com\r\nBcc: b@example.com", "nobody"]) {
      await expect(db.transaction().execute((trx) => queueMail(trx, deps(), enrollmentMail({ to })))).rejects.toThrow(TypeError);
    }
  });

  it("cancels the unsent mail of an enrollment and wipes its body, leaving sent mail and other enrollments alone", async () => {
    const { db } = core.storage;
    const [queued, sent, other] = await db
      .transaction()
      .execute((trx) =>
        queueMails(trx, deps(), [
          enrollmentMail({ enrollmentId: "enr_cancel" }),
          enrollmentMail({ enrollmentId: "enr_cancel" }),
          enrollmentMail({ enrollmentId: "enr_keep" }),
        ]),
      );
    await db.updateTable("outbox").set({ status: "sent", body_ciphertext: null, body_key_id: null }).where("id", "=", sent!.id).execute();
    const result = await db.transaction().execute((trx) => cancelMailsForEnrollment(trx, "enr_cancel"));
    expect(result).toEqual({ cancelled: 1 });
    const rows = await db.selectFrom("outbox").selectAll().where("id", "in", [queued!.id, sent!.id, other!.id]).execute();
    const byId = new Map(rows.map((row) => [row.id, row]));
    expect(byId.get(queued!.id)).toMatchObject({ status: "cancelled", body_ciphertext: null, body_key_id: null });
    expect(readMail(byId.get(queued!.id)!, core.services.keyring)).toBeNull();
    expect(byId.get(sent!.id)?.status).toBe("sent");
    expect(byId.get(other!.id)).toMatchObject({ status: "queued" });
    expect(byId.get(other!.id)?.body_ciphertext).not.toBeNull();
  });
});

describe("extractEnrollUrl", () => {
  it("finds the enrollment link in a text body", () => {
    expect(extractEnrollUrl(enrollmentMail().text)).toBe(link);
    expect(extractEnrollUrl("Open http://127.0.0.1:8080/enroll/abc_DEF-123.\nThanks")).toBe("http://127.0.0.1:8080/enroll/abc_DEF-123");
    expect(extractEnrollUrl("no link here")).toBeNull();
  });
});

import type { Insertable, Kysely, Transaction } from "kysely";
import type { Clock } from "../../clock.js";
import { sealingContext, type Keyring } from "../../crypto/keyring.js";
import { newId } from "../../ids.js";
import { compileEnrollmentTemplate, defaultEnrollmentTemplate, loadTemplate, type EnrollmentMailValues } from "./templates.js";
import type { Database, OutboxRow, OutboxTable } from "../../storage/schema.js";

/**
 * The mail outbox: mail is written in the transaction of the change that causes it (a
 * provisioning), so it exists exactly when the change does, and a worker sends it
 * later (worker.ts). Bodies are encrypted under the master key: an enrollment link is a
 * credential until it is used, and the database keeps no credential in the clear.
 */

export const outboxStatuses = ["queued", "sending", "sent", "failed", "cancelled"] as const;
export type OutboxStatus = (typeof outboxStatuses)[number];

/**
 * What a queued mail says: rendered bodies, or the values of an enrollment mail, which
 * is rendered with its virtual server's template when it is sent. The values are a
 * tenth of the rendered mail, and a provisioning task queues one mail a user.
 */
export type MailContent = { text: string; html: string } | { enrollment: EnrollmentMailValues };

export type MailToQueue = MailHeader & MailContent;

/** A mail whose bodies are already rendered. */
export type RenderedMailToQueue = MailHeader & { text: string; html: string };

export type MailHeader = {
  virtualServerId: string | null;
  /** What the mail is for, such as "enrollment". */
  kind: string;
  /** One address, never a list: an enrollment link goes to its user only. */
  to: string;
  subject: string;
  enrollmentId?: string | null;
};

export interface OutboxDeps {
  keyring: Keyring;
  clock: Clock;
}

export interface MailBody {
  text: string;
  html: string;
}

/** One addr-spec, no display name, no list separators, nothing that could end a header. */
const singleAddress = /^[^\s@,;:<>()[\]"\\]+@[^\s@,;:<>()[\]"\\]+$/;

/** The context binds a ciphertext to its row: one copied onto another mail fails to decrypt. */
const bodyContext = sealingContext.queuedMail;

/** RFC 5322 section 3.6.4: the same message keeps the same Message-ID when it is sent again after a crash. */
export const messageIdFor = (id: string) => `<${id}@tessera>`;

function newOutboxRow(deps: OutboxDeps, mail: MailToQueue, nowMs: number): Insertable<OutboxTable> {
  // Addresses come from validated user records; anything else here is a bug, and a
  // comma in it would send someone's enrollment link to a second recipient.
  if (!singleAddress.test(mail.to)) throw new TypeError(`not a single email address: ${JSON.stringify(mail.to)}`);
  const id = newId("mail");
  const content: MailContent = "enrollment" in mail ? { enrollment: mail.enrollment } : { text: mail.text, html: mail.html };
  const body = deps.keyring.encrypt(Buffer.from(JSON.stringify(content), "utf8"), bodyContext(id));
  return {
    id,
    virtual_server_id: mail.virtualServerId,
    kind: mail.kind,
    recipient: mail.to,
    // A header is one line; a line break from a template or a name would start a new header.
    subject: mail.subject.replace(/[\r\n]+/g, " ").trim(),
    body_ciphertext: body.ciphertext,
    body_key_id: body.keyId,
    status: "queued" satisfies OutboxStatus,
    attempts: 0,
    next_attempt_at: nowMs,
    lease_until: null,
    last_error: null,
    message_id: messageIdFor(id),
    enrollment_id: mail.enrollmentId ?? null,
    created_at: nowMs,
    sent_at: null,
  };
}

/** Queues one mail inside the caller's transaction; it is due at once. */
export async function queueMail(trx: Transaction<Database>, deps: OutboxDeps, mail: MailToQueue): Promise<{ id: string }> {
  const row = newOutboxRow(deps, mail, deps.clock.nowMs());
  await trx.insertInto("outbox").values(row).execute();
  return { id: row.id };
}

/** 16 columns a row: 500 rows stay under both databases' limits on bound parameters. */
const INSERT_CHUNK_ROWS = 500;

/**
 * Queues many mails inside the caller's transaction with multi-row inserts: a
 * provisioning task over 100,000 users queues 100,000 mails. Ids come back in the
 * order of `mails`.
 */
export async function queueMails(trx: Transaction<Database>, deps: OutboxDeps, mails: readonly MailToQueue[]): Promise<Array<{ id: string }>> {
  const nowMs = deps.clock.nowMs();
  const ids: Array<{ id: string }> = [];
  for (let start = 0; start < mails.length; start += INSERT_CHUNK_ROWS) {
    const rows = mails.slice(start, start + INSERT_CHUNK_ROWS).map((mail) => newOutboxRow(deps, mail, nowMs));
    await trx.insertInto("outbox").values(rows).execute();
    for (const row of rows) ids.push({ id: row.id });
  }
  return ids;
}

/** What a mail says, as stored, or null once it is wiped (sent or cancelled). */
export function readMail(row: Pick<OutboxRow, "id" | "body_ciphertext" | "body_key_id">, keyring: Keyring): MailContent | null {
  if (row.body_ciphertext === null || row.body_key_id === null) return null;
  return JSON.parse(keyring.decrypt(row.body_ciphertext, row.body_key_id, bodyContext(row.id)).toString("utf8")) as MailContent;
}

/** Renders stored mail with its virtual server's template, compiling each template once per reader. */
export function createMailRenderer(db: Kysely<Database>, keyring: Keyring) {
  const compiled = new Map<string, Promise<(values: EnrollmentMailValues) => { text: string; html: string }>>();
  return async function render(row: Pick<OutboxRow, "id" | "body_ciphertext" | "body_key_id" | "virtual_server_id">): Promise<MailBody | null> {
    const content = readMail(row, keyring);
    if (!content) return null;
    if (!("enrollment" in content)) return content;
    const key = row.virtual_server_id ?? "";
    let renderer = compiled.get(key);
    if (!renderer) {
      renderer = (row.virtual_server_id ? loadTemplate(db, row.virtual_server_id) : Promise.resolve(defaultEnrollmentTemplate)).then(compileEnrollmentTemplate);
      compiled.set(key, renderer);
    }
    const { text, html } = (await renderer)(content.enrollment);
    return { text, html };
  };
}

/**
 * Cancels the unsent mail of an enrollment that ended (cancelled, expired, replaced)
 * and wipes its bodies: the link in it is dead. A mail being sent at this moment still
 * goes out, but it is recorded as cancelled and never retried.
 */
export async function cancelMailsForEnrollment(trx: Transaction<Database> | Kysely<Database>, enrollmentId: string): Promise<{ cancelled: number }> {
  const result = await trx
    .updateTable("outbox")
    .set({ status: "cancelled" satisfies OutboxStatus, body_ciphertext: null, body_key_id: null, lease_until: null })
    .where("enrollment_id", "=", enrollmentId)
    .where("status", "in", ["queued", "sending", "failed"] satisfies OutboxStatus[])
    .executeTakeFirst();
  return { cancelled: Number(result.numUpdatedRows) };
}

/**
 * The enrollment link in a mail's text body, for operators who hand it over themselves
 * when no SMTP server is configured.
 */
export function extractEnrollUrl(text: string): string | null {
  return /\bhttps?:\/\/[^\s<>"']+\/enroll\/[A-Za-z0-9_-]+/.exec(text)?.[0] ?? null;
}

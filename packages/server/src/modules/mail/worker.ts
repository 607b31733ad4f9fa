import { clearTimeout, setTimeout } from "node:timers";
import { sql, type Kysely } from "kysely";
import type { Clock } from "../../clock.js";
import type { Config } from "../../config.js";
import type { Keyring } from "../../crypto/keyring.js";
import type { Database, OutboxRow } from "../../storage/schema.js";
import { createMailRenderer, type OutboxStatus } from "./outbox.js";
import { createMailTransport, SMTP_POOL_CONNECTIONS, type MailTransport } from "./transport.js";

/**
 * Sends the outbox. Any number of nodes may run a worker over one database: each claims
 * due mails with a compare-and-set (queued, or sending under a lease that ran out because
 * the node sending it stopped), so no mail is sent by two nodes at once. Delivery is at
 * least once: a node that stops after the SMTP server took a mail but before recording
 * it leaves it to be sent again when its lease runs out, under the same Message-ID.
 */

/** Pino's shape (Fastify's logger fits); the worker never logs a body or a link. */
export interface MailLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface MailWorkerOptions {
  db: Kysely<Database>;
  keyring: Keyring;
  clock: Clock;
  /** Null when no SMTP server is configured: the worker then sends nothing and mail waits in the outbox. */
  transport: MailTransport | null;
  /** The From: of every mail, `Name <address>`. */
  from: string;
  logger?: MailLogger;
  /** Mails claimed at a time. @default 100 */
  batchSize?: number;
  /** Attempts before a mail is given up as failed. @default 12 (about 5 hours of retries) */
  maxAttempts?: number;
  /** Mails handed to the transport at once. @default 2 per pooled connection */
  concurrency?: number;
  /** How long a claim holds; past it another node takes the mail over. @default 60000 */
  leaseMs?: number;
  /** A send still unanswered after this is abandoned and retried; below the lease. @default 45000 */
  sendTimeoutMs?: number;
  /** Pause between passes over the outbox when there is nothing to send. @default 1000 */
  pollIntervalMs?: number;
  /** Source of the retry jitter, in [0, 1). @default Math.random */
  random?: () => number;
}

export interface MailRunResult {
  sent: number;
  retried: number;
  failed: number;
}

export interface MailWorker {
  /** Polls every second (and at once on notify) until stop(). Does nothing without a transport. */
  start(): void;
  /** Stops polling and waits for the mails being sent to be recorded. Does not close the transport. */
  stop(): Promise<void>;
  /** Sends everything due now, a batch at a time, and reports what happened. */
  runOnce(): Promise<MailRunResult>;
  /** Mail was queued: look now instead of at the next poll. */
  notify(): void;
}

export const RETRY_BASE_MS = 30_000;
export const RETRY_CAP_MS = 3_600_000;

/** 30 s, 1 min, 2 min, ... capped at 1 h, each +-20 % so that mails that failed together do not all return together. */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(RETRY_BASE_MS * 2 ** Math.max(0, attempt - 1), RETRY_CAP_MS);
  return Math.round(Math.min(base * (0.8 + 0.4 * random()), RETRY_CAP_MS));
}

interface SmtpErrorFields {
  code?: unknown;
  responseCode?: unknown;
  command?: unknown;
}

/**
 * RFC 5321 section 4.2.1: a 5yz reply is permanent. Only a rejected recipient condemns
 * the mail itself ("no such user"); a 5yz on AUTH or MAIL FROM is the sender's
 * configuration, which an operator fixes, so those mails keep being retried.
 */
export function isPermanentRejection(error: unknown): boolean {
  const fields = (error ?? {}) as SmtpErrorFields;
  return typeof fields.responseCode === "number" && fields.responseCode >= 500 && fields.responseCode < 600 && fields.command === "RCPT TO";
}

/** What last_error keeps: the error code and the server's answer, never the message. */
export function describeSendError(error: unknown): string {
  if (!(error instanceof Error)) return String(error).slice(0, 500);
  const { code } = error as SmtpErrorFields;
  const text = `${typeof code === "string" ? `${code}: ` : ""}${error.message}`;
  return text.replace(/\s+/g, " ").slice(0, 500);
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
}

/** Sent mail is recorded this many rows a statement: few enough to resend little after a crash. */
const SENT_FLUSH_ROWS = 20;

/** A pass stops after this many batches even if mail keeps arriving; the next poll goes on. */
const MAX_BATCHES_PER_PASS = 1000;

export function createMailWorker(options: MailWorkerOptions): MailWorker {
  const { db, keyring, clock, transport, from, logger } = options;
  const batchSize = options.batchSize ?? 100;
  const maxAttempts = options.maxAttempts ?? 12;
  const concurrency = options.concurrency ?? 2 * SMTP_POOL_CONNECTIONS;
  const leaseMs = options.leaseMs ?? 60_000;
  const sendTimeoutMs = options.sendTimeoutMs ?? 45_000;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const random = options.random ?? Math.random;
  if (sendTimeoutMs >= leaseMs) throw new TypeError("sendTimeoutMs must be shorter than leaseMs, or a slow send would outlive its claim");

  /** Claims up to a batch of due mails; a row another node claimed first is simply not returned. */
  let render = createMailRenderer(db, keyring);

  async function claim(): Promise<OutboxRow[]> {
    const now = clock.nowMs();
    const abandoned = await db
      .selectFrom("outbox")
      .select("id")
      .where("status", "=", "sending" satisfies OutboxStatus)
      .where("lease_until", "<", now)
      .limit(batchSize)
      .execute();
    const queued =
      abandoned.length < batchSize
        ? await db
            .selectFrom("outbox")
            .select("id")
            .where("status", "=", "queued" satisfies OutboxStatus)
            .where("next_attempt_at", "<=", now)
            .orderBy("next_attempt_at")
            .limit(batchSize - abandoned.length)
            .execute()
        : [];
    const ids = [...abandoned, ...queued].map((row) => row.id);
    if (ids.length === 0) return [];
    // The compare-and-set: the row must still be due as seen above. PostgreSQL re-checks
    // the condition on the newest row version after waiting for a concurrent claim;
    // SQLite runs one writer at a time. Either way one node wins each row.
    return db
      .updateTable("outbox")
      .set({ status: "sending" satisfies OutboxStatus, lease_until: now + leaseMs, attempts: sql<number>`attempts + 1` })
      .where("id", "in", ids)
      .where((eb) =>
        eb.or([
          eb.and([eb("status", "=", "queued" satisfies OutboxStatus), eb("next_attempt_at", "<=", now)]),
          eb.and([eb("status", "=", "sending" satisfies OutboxStatus), eb("lease_until", "<", now)]),
        ]),
      )
      .returningAll()
      .execute();
  }

  /** Records a failed attempt, if the claim is still ours: a retry later, or failed for good. */
  async function recordFailure(row: OutboxRow, error: unknown, result: MailRunResult): Promise<void> {
    const lastError = describeSendError(error);
    const permanent = isPermanentRejection(error);
    const giveUp = permanent || row.attempts >= maxAttempts;
    const now = clock.nowMs();
    const update = db
      .updateTable("outbox")
      .where("id", "=", row.id)
      .where("status", "=", "sending" satisfies OutboxStatus)
      .where("lease_until", "=", row.lease_until);
    const fields = { id: row.id, messageId: row.message_id, attempts: row.attempts, error: lastError };
    if (giveUp) {
      await update.set({ status: "failed" satisfies OutboxStatus, lease_until: null, last_error: lastError }).execute();
      result.failed += 1;
      logger?.error({ ...fields, permanent }, permanent ? "mail rejected by the SMTP server" : `mail failed after ${row.attempts} attempts`);
    } else {
      const delay = retryDelayMs(row.attempts, random);
      await update.set({ status: "queued" satisfies OutboxStatus, lease_until: null, last_error: lastError, next_attempt_at: now + delay }).execute();
      result.retried += 1;
      logger?.warn({ ...fields, retryInMs: delay }, "mail not sent; will retry");
    }
  }

  /**
   * Records sent mail a few rows a statement rather than a statement a mail (each
   * rewrites the row, and the wiped body frees its pages). Sent is the truth once the server took a mail, even if our lease ran out
   * meanwhile and another node holds it: that node then finds it sent and leaves it. The
   * body goes: the link is a credential and nobody needs it any more.
   */
  async function recordSent(rows: OutboxRow[], result: MailRunResult): Promise<void> {
    if (rows.length === 0) return;
    try {
      await db
        .updateTable("outbox")
        .set({ status: "sent" satisfies OutboxStatus, sent_at: clock.nowMs(), lease_until: null, last_error: null, body_ciphertext: null, body_key_id: null })
        .where("id", "in", rows.map((row) => row.id))
        .where("status", "in", ["sending", "queued"] satisfies OutboxStatus[])
        .execute();
      for (const row of rows) logger?.info({ id: row.id, messageId: row.message_id, attempts: row.attempts }, "mail sent");
    } catch (error) {
      // The rows stay claimed; when their lease runs out they are sent again.
      logger?.error({ ids: rows.map((row) => row.id), error: describeSendError(error) }, "mails sent but not recorded; they may be sent again");
    }
    result.sent += rows.length;
  }

  /**
   * Gives a claimed mail back untried: the batch ahead of it took so long that its lease
   * would run out during the send, and another node could then send it too.
   */
  async function release(row: OutboxRow): Promise<void> {
    await db
      .updateTable("outbox")
      .set({ status: "queued" satisfies OutboxStatus, lease_until: null, attempts: sql<number>`attempts - 1` })
      .where("id", "=", row.id)
      .where("status", "=", "sending" satisfies OutboxStatus)
      .where("lease_until", "=", row.lease_until)
      .execute();
  }

  /** Sends one claimed mail: "sent" when the server took it. */
  async function deliver(row: OutboxRow, result: MailRunResult): Promise<"sent" | "not sent" | "released"> {
    if (!transport) return "not sent";
    if (clock.nowMs() + sendTimeoutMs > (row.lease_until ?? 0)) {
      await release(row).catch((error: unknown) => logger?.error({ id: row.id, error: describeSendError(error) }, "could not release a mail"));
      return "released";
    }
    try {
      // A node that stopped mid-send on this very mail, again and again: do not try forever.
      if (row.attempts > maxAttempts) throw new Error(`gave up: ${row.attempts - 1} attempts, the last one abandoned mid-send`);
      const body = await render(row);
      if (!body) throw new Error("the mail has no body");
      await transport.sendMail({
        from,
        to: { name: "", address: row.recipient },
        subject: row.subject,
        text: body.text,
        html: body.html,
        messageId: row.message_id,
        // RFC 3834: automatic mail; out-of-office replies stay away.
        headers: { "Auto-Submitted": "auto-generated" },
        signal: AbortSignal.timeout(sendTimeoutMs),
      });
      return "sent";
    } catch (error) {
      try {
        await recordFailure(row, error, result);
      } catch (recordError) {
        // The row stays claimed; when its lease runs out it is tried again.
        logger?.error({ id: row.id, error: describeSendError(recordError) }, "could not record a mail failure");
      }
      return "not sent";
    }
  }

  /**
   * Sends a claimed batch, recording sent mail every SENT_FLUSH_ROWS rows and at the end.
   * Returns how many mails it handed back untried.
   */
  async function deliverBatch(rows: OutboxRow[], result: MailRunResult): Promise<number> {
    let sent: OutboxRow[] = [];
    let released = 0;
    const flushes: Array<Promise<void>> = [];
    await forEachBounded(rows, concurrency, async (row) => {
      const outcome = await deliver(row, result);
      if (outcome === "released") released += 1;
      if (outcome !== "sent") return;
      sent.push(row);
      if (sent.length >= SENT_FLUSH_ROWS) {
        flushes.push(recordSent(sent, result));
        sent = [];
      }
    });
    flushes.push(recordSent(sent, result));
    await Promise.all(flushes);
    return released;
  }

  async function drain(keepGoing: () => boolean): Promise<MailRunResult> {
    const result: MailRunResult = { sent: 0, retried: 0, failed: 0 };
    if (!transport) return result;
    // Templates are read afresh for each pass: an operator's change applies to mail still queued.
    render = createMailRenderer(db, keyring);
    for (let batch = 0; batch < MAX_BATCHES_PER_PASS && keepGoing(); batch += 1) {
      const rows = await claim();
      if (rows.length === 0) break;
      const released = await deliverBatch(rows, result);
      // A short batch means nothing more is due, unless some were handed back just now.
      // Each batch sends at least its first mail, so this ends.
      if (rows.length < batchSize && released === 0) break;
    }
    return result;
  }

  let started = false;
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> | null = null;
  let again = false;

  function schedule(delayMs: number): void {
    if (!started) return;
    if (timer) clearTimeout(timer);
    // unref: a waiting worker never keeps the process alive by itself.
    timer = setTimeout(tick, delayMs).unref();
  }

  function tick(): void {
    timer = null;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = drain(() => started)
      .then(
        () => undefined,
        (error: unknown) => logger?.error({ error: describeSendError(error) }, "mail worker pass failed"),
      )
      .finally(() => {
        inFlight = null;
        const now = again;
        again = false;
        schedule(now ? 0 : pollIntervalMs);
      });
  }

  return {
    start() {
      if (started || !transport) return;
      started = true;
      schedule(0);
    },
    async stop() {
      started = false;
      if (timer) clearTimeout(timer);
      timer = null;
      await inFlight;
    },
    runOnce: () => drain(() => true),
    notify() {
      if (!started) return;
      if (inFlight) again = true;
      else schedule(0);
    },
  };
}

export interface MailDelivery {
  worker: MailWorker;
  transport: MailTransport | null;
  /** Stops the worker, then closes the SMTP connections. */
  close(): Promise<void>;
}

/** What `tessera serve` runs: the worker over the configured SMTP server, or an idle one when mail stays in the outbox. */
export function startMailDelivery(deps: { db: Kysely<Database>; keyring: Keyring; clock: Clock }, mail: Config["mail"], logger?: MailLogger): MailDelivery {
  const transport = createMailTransport(mail);
  const worker = createMailWorker({ ...deps, transport, from: mail.from, logger });
  worker.start();
  if (!transport) logger?.info({}, "no TESSERA_SMTP_URL: mail stays in the outbox (tessera mail outbox, GET /api/v1/outbox)");
  return {
    worker,
    transport,
    async close() {
      await worker.stop();
      transport?.close();
    },
  };
}

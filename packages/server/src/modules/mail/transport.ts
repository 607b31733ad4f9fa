import nodemailer, { type Transporter } from "nodemailer";
import type { Config } from "../../config.js";

export type MailTransport = Transporter;

/** Connections kept open to the SMTP server; the worker sends this many mails at once. */
export const SMTP_POOL_CONNECTIONS = 5;

/**
 * The SMTP transport of the configuration, or null when no SMTP server is configured
 * (mail then stays in the outbox for operators to read).
 *
 * Pooled: a provisioning task queues thousands of mails, and a new connection with its
 * TLS handshake and AUTH for each would cap throughput at a few dozen a second.
 * Timeouts are well below the worker's 60 s lease, so a hung server fails a send (and it
 * is retried) before another node could take the same mail over and send it twice.
 */
export function createMailTransport(mail: Config["mail"]): MailTransport | null {
  if (!mail.smtpUrl) return null;
  return nodemailer.createTransport({
    url: mail.smtpUrl,
    pool: true,
    maxConnections: SMTP_POOL_CONNECTIONS,
    maxMessages: 1000,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
  });
}

import type { AddressInfo } from "node:net";
import { simpleParser, type ParsedMail } from "mailparser";
import { waitableCount } from "../../testing/counter.js";
import { SMTPServer } from "smtp-server";

/**
 * A real SMTP server in the test process (smtp-server, the counterpart of nodemailer),
 * on 127.0.0.1, keeping every message it accepts, parsed with mailparser. For tests only.
 */

export interface ReceivedMail {
  envelopeFrom: string | null;
  envelopeTo: string[];
  user: string | null;
  parsed: ParsedMail;
  raw: string;
}

export interface TestSmtpServer {
  port: number;
  url: string;
  received: ReceivedMail[];
  /** Resolves once `count` messages have arrived; fails after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface TestSmtpOptions {
  /** Listen on this port (0: any free one). */
  port?: number;
  /** Recipients refused with "550 5.1.1 No such user". */
  rejectRecipient?: (address: string) => boolean;
  /** Require AUTH with these credentials. */
  auth?: { user: string; pass: string };
}

export async function startTestSmtpServer(options: TestSmtpOptions = {}): Promise<TestSmtpServer> {
  const received: ReceivedMail[] = [];
  const taken = waitableCount("messages", () => received.length);
  const server = new SMTPServer({
    // Plain SMTP on loopback: no certificate to trust in tests.
    disabledCommands: options.auth ? ["STARTTLS"] : ["STARTTLS", "AUTH"],
    authOptional: !options.auth,
    allowInsecureAuth: true,
    logger: false,
    closeTimeout: 200,
    onAuth(auth, _session, callback) {
      const ok = options.auth && auth.username === options.auth.user && auth.password === options.auth.pass;
      if (!ok) {
        callback(Object.assign(new Error("Invalid username or password"), { responseCode: 535 }));
        return;
      }
      callback(null, { user: auth.username });
    },
    onRcptTo(address, _session, callback) {
      if (options.rejectRecipient?.(address.address)) {
        callback(Object.assign(new Error("5.1.1 No such user"), { responseCode: 550 }));
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        simpleParser(raw).then(
          (parsed) => {
            received.push({
              envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
              envelopeTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
              user: typeof session.user === "string" ? session.user : null,
              parsed,
              raw,
            });
            taken.changed();
            callback();
          },
          (error: Error) => callback(error),
        );
      });
    },
  });
  server.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    received,
    waitFor: (count, timeoutMs = 10_000) => taken.reach(count, timeoutMs),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A port with nothing listening on it: an SMTP server that is down. */
export async function closedPort(): Promise<number> {
  const probe = await startTestSmtpServer();
  await probe.close();
  return probe.port;
}

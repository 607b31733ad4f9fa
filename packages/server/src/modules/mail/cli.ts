import { InvalidArgumentError, Option, type Command } from "commander";
import type { Kysely } from "kysely";
import type { Clock } from "../../clock.js";
import { ConfigError, type Config } from "../../config.js";
import type { Keyring } from "../../crypto/keyring.js";
import type { Database } from "../../storage/schema.js";
import { installerPrincipal } from "../operators/access.js";
import { outboxStatuses, type OutboxStatus } from "./outbox.js";
import type { MailService } from "./service.js";
import { createMailTransport } from "./transport.js";
import { createMailWorker } from "./worker.js";

/** The parts of the services the mail commands use. */
export interface MailCliServices {
  mail: MailService;
  storage: { db: Kysely<Database> };
  keyring: Keyring;
  clock: Clock;
}

/** program.ts's own helpers, handed in so that the commands read like the others. */
export interface MailCliHelpers {
  withServices<T>(work: (services: MailCliServices, config: Config) => Promise<T>): Promise<T>;
  resolveVirtualServer(services: MailCliServices, idOrName: string): Promise<string>;
  print(json: boolean, value: unknown, human: () => string): void;
}

function pageSize(value: string): number {
  const parsed = Number(value);
  if (!/^\d+$/.test(value.trim()) || parsed < 1 || parsed > 1000) throw new InvalidArgumentError("a whole number from 1 to 1000");
  return parsed;
}

/** `tessera mail outbox` and `tessera mail send-pending`. */
export function registerMailCommands(program: Command, helpers: MailCliHelpers): void {
  const mail = program.command("mail").description("outgoing mail: the outbox and its delivery");

  mail
    .command("outbox")
    .description("list outgoing mail, newest first; unsent mail shows its enrollment link (for handing over without SMTP)")
    .option("--vs <virtualServer>", "virtual server id or name (default: all)")
    .addOption(new Option("--status <status>", "only mail in this state").choices(outboxStatuses))
    .option("--limit <n>", "page size (1 to 1000)", pageSize, 100)
    .option("--cursor <cursor>", "the next page, from a previous --json answer")
    .option("--json", "print one JSON object for scripts")
    .action(async (options: { vs?: string; status?: OutboxStatus; limit: number; cursor?: string; json?: boolean }) =>
      helpers.withServices(async (services) => {
        const virtualServerId = options.vs ? await helpers.resolveVirtualServer(services, options.vs) : undefined;
        const page = await services.mail.listOutbox(installerPrincipal, {
          virtualServerId,
          status: options.status,
          cursor: options.cursor,
          limit: options.limit,
        });
        helpers.print(!!options.json, page, () =>
          page.items.length === 0
            ? "the outbox is empty"
            : [
                ...page.items.map((item) =>
                  [
                    `${item.createdAt}  ${item.status.padEnd(9)} attempts ${item.attempts}  ${item.to}  ${item.subject}`,
                    ...(item.lastError ? [`    last error: ${item.lastError}`] : []),
                    ...(item.enrollUrl ? [`    link: ${item.enrollUrl}`] : []),
                  ].join("\n"),
                ),
                ...(page.nextCursor ? [`(more: --cursor ${page.nextCursor})`] : []),
              ].join("\n"),
        );
      }),
    );

  mail
    .command("send-pending")
    .description("send the mail that is due now through TESSERA_SMTP_URL, once, and report")
    .option("--json", "print one JSON object for scripts")
    .action(async (options: { json?: boolean }) =>
      helpers.withServices(async (services, config) => {
        const transport = createMailTransport(config.mail);
        if (!transport) throw new ConfigError("TESSERA_SMTP_URL is not set: mail stays in the outbox (tessera mail outbox)");
        try {
          const worker = createMailWorker({ db: services.storage.db, keyring: services.keyring, clock: services.clock, transport, from: config.mail.from });
          const result = await worker.runOnce();
          helpers.print(!!options.json, result, () => `sent ${result.sent}, to retry ${result.retried}, failed ${result.failed}`);
          if (result.retried > 0 || result.failed > 0) process.exitCode = 3;
        } finally {
          transport.close();
        }
      }),
    );
}

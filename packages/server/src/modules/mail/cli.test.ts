import { Command } from "commander";
import { afterAll, afterEach, beforeAll, expect, it, vi } from "vitest";
import { ConfigError, loadConfig, type Config } from "../../config.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { installerPrincipal } from "../operators/access.js";
import { registerMailCommands, type MailCliServices } from "./cli.js";
import { queueMails } from "./outbox.js";
import { createMailService } from "./service.js";
import { startTestSmtpServer, type TestSmtpServer } from "./test-smtp-server.js";

describeEachDatabase("tessera mail commands", (kind) => {
  let core: TestCore;
  let smtp: TestSmtpServer;
  let services: MailCliServices;
  let vsId: string;

  beforeAll(async () => {
    core = await createTestCore(kind);
    smtp = await startTestSmtpServer();
    services = {
      mail: createMailService({ db: core.storage.db, clock: core.clock, audit: core.services.audit, keyring: core.services.keyring }),
      storage: core.storage,
      keyring: core.services.keyring,
      clock: core.clock,
    };
    vsId = (await core.services.virtualServers.create(installerPrincipal, { name: "Paris" })).id;
    await core.storage.db.transaction().execute((trx) =>
      queueMails(trx, { keyring: core.services.keyring, clock: core.clock }, [
        {
          virtualServerId: vsId,
          kind: "enrollment",
          to: "anna@example.com",
          subject: "Set up your Paris login token",
          text: "Open http://tessera.test/enroll/ANNACODE to set it up.",
          html: '<a href="http://tessera.test/enroll/ANNACODE">Set up</a>',
        },
      ]),
    );
  });
  afterEach(() => {
    process.exitCode = undefined;
  });
  afterAll(async () => {
    await smtp.close();
    await core.close();
  });

  /** Runs `tessera mail ...` in-process, as program.ts registers it, and returns what it printed. */
  async function run(args: string[], environment: Record<string, string> = {}): Promise<string> {
    const config: Config = loadConfig({ TESSERA_DATA_DIR: core.database.dataDir, ...environment });
    const program = new Command("tessera").exitOverride();
    registerMailCommands(program, {
      withServices: (work) => work(services, config),
      resolveVirtualServer: async (_services, idOrName) => (idOrName === "Paris" ? vsId : idOrName),
      print: (json, value, human) => process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human()}\n`),
    });
    let output = "";
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      output += chunk.toString();
      return true;
    });
    try {
      await program.parseAsync(["node", "tessera", "mail", ...args]);
    } finally {
      spy.mockRestore();
    }
    return output;
  }

  it("lists the outbox with the link of unsent mail, for handing over without SMTP", async () => {
    const human = await run(["outbox", "--vs", "Paris"]);
    expect(human).toContain("queued    attempts 0  anna@example.com  Set up your Paris login token");
    expect(human).toContain("link: http://tessera.test/enroll/ANNACODE");
    const json = JSON.parse(await run(["outbox", "--status", "queued", "--json"])) as { items: Array<{ enrollUrl: string }> };
    expect(json.items.map((item) => item.enrollUrl)).toEqual(["http://tessera.test/enroll/ANNACODE"]);
    expect(await run(["outbox", "--status", "sent"])).toBe("the outbox is empty\n");
  });

  it("refuses send-pending without TESSERA_SMTP_URL", async () => {
    await expect(run(["send-pending"])).rejects.toThrow(ConfigError);
  });

  it("sends what is due through the configured SMTP server with send-pending", async () => {
    const output = await run(["send-pending", "--json"], { TESSERA_SMTP_URL: smtp.url, TESSERA_MAIL_FROM: "Paris IT <it@paris.test>" });
    expect(JSON.parse(output)).toEqual({ sent: 1, retried: 0, failed: 0 });
    expect(smtp.received).toHaveLength(1);
    expect(smtp.received[0]!.parsed.from?.value).toEqual([{ name: "Paris IT", address: "it@paris.test" }]);
    const listed = JSON.parse(await run(["outbox", "--json"])) as { items: Array<{ status: string; text?: string }> };
    expect(listed.items).toMatchObject([{ status: "sent" }]);
    expect(listed.items[0]).not.toHaveProperty("text");
  });
});

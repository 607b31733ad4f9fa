import { createReadStream, readFileSync, statSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { loadConfig, type Config } from "../config.js";
import { openCore, type Services } from "../core.js";
import { addKeyToKeyFile, loadKeyring, pruneKeyFile } from "../crypto/keyring.js";
import { masterKeysInUse, reencryptSealedColumns } from "../crypto/rotate.js";
import { TesseraError } from "../errors.js";
import { startServer } from "../main.js";
import { verifyAuditChain } from "../modules/audit/service.js";
import { registerMailCommands } from "../modules/mail/cli.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { tokenStates } from "../modules/tokens/lifecycle.js";
import { parseSeedFile } from "../modules/tokens/seed-import.js";
import { generatedTokenTypes, tokenTypeIds } from "../modules/tokens/types.js";
import { openStorage } from "../storage/database.js";
import { migrateToLatest } from "../storage/migrate.js";
import { registerApplicationCommands } from "./applications.js";
import { bootstrap } from "./bootstrap.js";
import { ensureDemo } from "./demo.js";
import { createProgress } from "./progress.js";
import { CliError } from "./errors.js";
import { registerProvisioningCommands } from "./provisioning.js";

/** Runs `work` with the services of the configured database, closing it afterwards. */
async function withServices<T>(work: (services: Services, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const services = await openCore(config);
  try {
    return await work(services, config);
  } finally {
    await services.storage.close();
  }
}

function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human()}\n`);
}

/** Accepts a virtual server id or its (unique) name. */
async function resolveVirtualServer(services: Services, idOrName: string): Promise<string> {
  const rows = await services.storage.db
    .selectFrom("virtual_servers")
    .select("id")
    .where((eb) => eb.or([eb("id", "=", idOrName), eb("name", "=", idOrName)]))
    .execute();
  if (rows.length === 1) return rows[0]!.id;
  throw new CliError(rows.length === 0 ? `no virtual server ${idOrName}` : `${idOrName} names several virtual servers; give the id`);
}

export { CliError } from "./errors.js";

/** Parses a whole-number option within a range, or refuses it the way commander reports bad arguments. */
function wholeNumber(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`a whole number from ${min} to ${max}`);
    }
    return parsed;
  };
}

const jsonOption = new Option("--json", "print one JSON object for scripts");

export function buildProgram(): Command {
  const program = new Command("tessera")
    .description("Tessera token authentication service. Configuration comes from the environment (see docs/configuration.md).")
    .showHelpAfterError();

  program
    .command("serve")
    .description("run the HTTP server (applies migrations first)")
    .option("--demo", "create demo data on first start and print a one-time admin login")
    .action(async (options: { demo?: boolean }) => {
      const config = loadConfig();
      const server = await startServer(config);
      process.stdout.write(`Tessera is listening on ${server.url}\n`);
      process.stdout.write(`  admin API  ${server.url}/api/v1   docs ${server.url}/api/docs   OpenAPI ${server.url}/api/openapi.json\n`);
      process.stdout.write(`  RADIUS     ${server.radius ? `udp ${server.radius.address}:${server.radius.port}` : "off"}\n`);
      process.stdout.write(`  database   ${config.database.kind === "sqlite" ? config.database.file : "PostgreSQL"}\n`);
      if (options.demo) {
        const demo = await ensureDemo(server.services);
        const waiting = await server.services.mail.listOutbox(installerPrincipal, { virtualServerId: demo.virtualServerId, status: "queued", limit: 1 });
        const link = waiting.items[0]?.enrollUrl;
        process.stdout.write(
          `  demo       ${demo.created ? "created" : "present"}: virtual server ${demo.virtualServerId}\n` +
            `  admin login (one-time, new at each demo start): ${demo.email} / ${demo.password}\n` +
            (link ? `  enrollment page of a demo user (mail waits in the outbox without SMTP): ${link}\n` : "") +
            `  try: curl -s -X POST ${server.url}/api/v1/sessions -H 'content-type: application/json' -d '{"email":"${demo.email}","password":"${demo.password}"}'\n`,
        );
      }
      const stop = async () => {
        await server.close();
        process.exit(0);
      };
      process.once("SIGINT", () => void stop());
      process.once("SIGTERM", () => void stop());
    });

  program
    .command("migrate")
    .description("apply database migrations")
    .addOption(jsonOption)
    .action(async (options: { json?: boolean }) => {
      const config = loadConfig();
      const storage = openStorage(config.database);
      try {
        const report = await migrateToLatest(storage);
        print(!!options.json, report, () => (report.applied.length ? `applied: ${report.applied.join(", ")}` : "up to date"));
      } finally {
        await storage.close();
      }
    });

  program
    .command("bootstrap")
    .description("create the first virtual server and its admin operator (password and API key shown once)")
    .option("--name <name>", "virtual server name", "Default")
    .option("--email <email>", "admin operator email", "admin@tessera.local")
    .addOption(jsonOption)
    .action(async (options: { name: string; email: string; json?: boolean }) =>
      withServices(async (services) => {
        const result = await bootstrap(services, { name: options.name, email: options.email });
        print(!!options.json, result, () =>
          [
            `virtual server ${result.virtualServerName} (${result.virtualServerId})`,
            `admin ${result.operatorEmail}`,
            `password ${result.password}   (shown once)`,
            `API key  ${result.apiKey}   (shown once)`,
          ].join("\n"),
        );
      }),
    );

  const users = program.command("users").description("users of a virtual server");
  users
    .command("import")
    .argument("<file>", "CSV with a header row: userId, firstName, lastName, email, groups (';' separated)")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .option("--batch-size <n>", "users written per transaction", wholeNumber(1, 10_000), 5000)
    .addOption(jsonOption)
    .action(async (file: string, options: { vs: string; batchSize: number; json?: boolean }) =>
      withServices(async (services) => {
        const virtualServerId = await resolveVirtualServer(services, options.vs);
        const total = statSync(file).size;
        const progress = createProgress("importing users", total, { quiet: !!options.json });
        const report = await services.importUsers(installerPrincipal, virtualServerId, createReadStream(file), {
          batchSize: options.batchSize,
          onProgress: (p) => progress.update(p.bytes, `${p.imported} imported, ${p.failed} failed`),
        });
        progress.update(total, `${report.imported} imported, ${report.failed} failed`);
        progress.stop();
        print(!!options.json, report, () =>
          [
            `imported ${report.imported}, failed ${report.failed}`,
            ...report.errors.slice(0, 50).map((e) => `  line ${e.line}${e.userId ? ` (${e.userId})` : ""}: ${e.code} ${e.message}`),
            ...(report.errors.length > 50 ? [`  ... ${report.failed - 50} more (use --json for all listed)`] : []),
          ].join("\n"),
        );
        if (report.failed > 0) process.exitCode = 3;
      }),
    );

  const tokens = program.command("tokens").description("the token inventory");
  tokens
    .command("add")
    .description("add mobile or email tokens with generated serials")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(new Option("--type <type>", "token type").choices(generatedTokenTypes).makeOptionMandatory())
    .requiredOption("--count <n>", "how many", wholeNumber(1, 1_000_000))
    .addOption(jsonOption)
    .action(async (options: { vs: string; type: (typeof generatedTokenTypes)[number]; count: number; json?: boolean }) =>
      withServices(async (services) => {
        const virtualServerId = await resolveVirtualServer(services, options.vs);
        const progress = createProgress("adding tokens", options.count, { quiet: !!options.json });
        let added = 0;
        const serials: string[] = [];
        while (added < options.count) {
          const batch = Math.min(10_000, options.count - added);
          const result = await services.tokens.add(installerPrincipal, { virtualServerId, type: options.type, count: batch });
          serials.push(...result.serials);
          added += batch;
          progress.update(added);
        }
        progress.stop();
        print(!!options.json, { count: added, firstSerial: serials[0], lastSerial: serials.at(-1), serials }, () =>
          `added ${added} ${options.type} tokens: ${serials[0]} .. ${serials.at(-1)}`,
        );
      }),
    );

  tokens
    .command("import")
    .description("import hardware tokens from a PSKC (RFC 6030) or CSV seed file; all or nothing")
    .argument("<file>")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(new Option("--format <format>", "seed file format (default: from the file name)").choices(["pskc", "csv"]))
    .option("--psk <hex>", "pre-shared key of an encrypted PSKC file")
    .addOption(jsonOption)
    .action(async (file: string, options: { vs: string; format?: "pskc" | "csv"; psk?: string; json?: boolean }) =>
      withServices(async (services) => {
        const virtualServerId = await resolveVirtualServer(services, options.vs);
        const format = options.format ?? (/\.(xml|pskc)$/i.test(file) ? "pskc" : "csv");
        const seeds = parseSeedFile(format, readFileSync(file, "utf8"), options.psk ? Buffer.from(options.psk, "hex") : undefined);
        const result = await services.tokens.importSeeds(installerPrincipal, { virtualServerId, seeds });
        print(!!options.json, result, () => `imported ${result.count} hardware tokens`);
      }),
    );

  tokens
    .command("list")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .option("--prefix <serialPrefix>", "serials starting with")
    .addOption(new Option("--state <state>").choices(tokenStates))
    .addOption(new Option("--type <type>").choices(tokenTypeIds))
    .option("--user <userId>", "held by this user")
    .option("--limit <n>", "page size", wholeNumber(1, 1000), 100)
    .option("--cursor <cursor>", "the next page, from a previous --json answer")
    .addOption(jsonOption)
    .action(async (options: { vs: string; prefix?: string; state?: (typeof tokenStates)[number]; type?: (typeof tokenTypeIds)[number]; user?: string; limit: number; cursor?: string; json?: boolean }) =>
      withServices(async (services) => {
        const virtualServerId = await resolveVirtualServer(services, options.vs);
        const page = await services.tokens.list(installerPrincipal, {
          virtualServerId,
          serialPrefix: options.prefix,
          state: options.state,
          type: options.type,
          userId: options.user,
          limit: options.limit,
          cursor: options.cursor,
        });
        print(!!options.json, page, () =>
          [
            ...page.items.map((t) => `${t.serial.padEnd(16)} ${t.type.padEnd(9)} ${t.state.padEnd(10)} ${t.user?.userId ?? ""}`),
            ...(page.nextCursor ? [`(more: --cursor ${page.nextCursor})`] : []),
          ].join("\n"),
        );
      }),
    );

  tokens
    .command("show")
    .argument("<serial>")
    .addOption(jsonOption)
    .action(async (serial: string, options: { json?: boolean }) =>
      withServices(async (services) => {
        const token = await services.tokens.get(installerPrincipal, serial);
        print(!!options.json, token, () =>
          [
            `serial      ${token.serial}`,
            `type        ${token.type} (${token.otp.mode.toUpperCase()}, ${token.otp.digits} digits, ${token.otp.algorithm})`,
            `state       ${token.state}${token.stateReason ? ` (${token.stateReason})` : ""}`,
            `user        ${token.user ? `${token.user.userId} <${token.user.email}>` : "-"}`,
            `device      ${token.device ? `${token.device.app} on ${token.device.target ?? "?"}, Push OTP ${token.device.pushNow}` : "-"}`,
          ].join("\n"),
        );
      }),
    );

  program
    .command("audit")
    .description("the audit trail")
    .command("verify")
    .description("check the hash chain; exits 4 at the first broken link")
    .addOption(jsonOption)
    .action(async (options: { json?: boolean }) =>
      withServices(async (services) => {
        await services.audit.settle();
        const verdict = await verifyAuditChain(services.storage.db);
        print(!!options.json, verdict, () =>
          verdict.ok
            ? `audit chain intact: ${verdict.records} records`
            : `audit chain broken at record ${verdict.brokenAtSeq}: ${verdict.problem} (${verdict.records} records before it are intact)`,
        );
        if (!verdict.ok) process.exitCode = 4;
      }),
    );

  registerProvisioningCommands(program, { withServices, resolveVirtualServer, print });
  registerApplicationCommands(program, { withServices, resolveVirtualServer, print });
  registerMailCommands(program, { withServices, resolveVirtualServer, print });

  const keys = program.command("keys").description("the master key");
  keys
    .command("rotate")
    .description("make a new master key (key file) or take the one in TESSERA_MASTER_KEY, and re-encrypt everything sealed under an older one")
    .addOption(jsonOption)
    .action(async (options: { json?: boolean }) => {
      const config = loadConfig();
      const keyring = config.masterKey.fromEnvironment ? loadKeyring(config.masterKey) : addKeyToKeyFile(config.masterKey);
      const services = await openCore(config);
      try {
        const result = await reencryptSealedColumns(services);
        const { tokens, radiusSecrets, queuedMail, serverSecrets } = result.byKind;
        print(!!options.json, { ...result, keyId: keyring.currentKeyId }, () =>
          `re-encrypted ${tokens} token keys, ${radiusSecrets} RADIUS secrets, ${queuedMail} queued mails and ${serverSecrets} server secrets under master key ${keyring.currentKeyId}; ` +
            "the old key stays for decryption until `tessera keys prune`",
        );
      } finally {
        await services.storage.close();
      }
    });

  keys
    .command("prune")
    .description("remove from the key file the master keys nothing sealed uses any more (after every node runs with the new key)")
    .addOption(jsonOption)
    .action(async (options: { json?: boolean }) =>
      withServices(async (services, config) => {
        const result = pruneKeyFile(config.masterKey, await masterKeysInUse(services.storage.db));
        print(!!options.json, result, () => (result.removed.length ? `removed ${result.removed.join(", ")}` : "nothing to remove"));
      }),
    );

  return program;
}

function isFileError(error: unknown): error is NodeJS.ErrnoException & { path: string; code: string } {
  const candidate = error as NodeJS.ErrnoException | null;
  return candidate instanceof Error && typeof candidate.path === "string" && typeof candidate.code === "string";
}

/** Prints errors the way scripts can read them: the code first, exit status 1. */
export async function runCli(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof TesseraError) {
      process.stderr.write(`error ${error.code}: ${error.message}\n`);
      process.exitCode = 1;
    } else if (error instanceof CliError || (error instanceof Error && error.name === "ConfigError")) {
      process.stderr.write(`error: ${error.message}\n`);
      process.exitCode = 1;
    } else if (isFileError(error)) {
      // A file that is not there or not readable is the caller's mistake, not a crash.
      process.stderr.write(`error: cannot read ${error.path}: ${error.code}\n`);
      process.exitCode = 1;
    } else {
      throw error;
    }
  }
}

import { readFileSync } from "node:fs";
import { InvalidArgumentError, Option, type Command } from "commander";
import type { Services } from "../core.js";
import { PUSH_TIMEOUT_SECONDS, type Application } from "../modules/applications/service.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { CliError } from "./errors.js";
import type { CliContext } from "./provisioning.js";

function pushTimeout(value: string): number {
  const parsed = Number(value);
  if (!/^\d+$/.test(value.trim()) || parsed < PUSH_TIMEOUT_SECONDS.min || parsed > PUSH_TIMEOUT_SECONDS.max) {
    throw new InvalidArgumentError(`a whole number of seconds from ${PUSH_TIMEOUT_SECONDS.min} to ${PUSH_TIMEOUT_SECONDS.max}`);
  }
  return parsed;
}

/** `--address` may repeat, and each may list several, comma-separated. */
function addresses(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(",").map((entry) => entry.trim()).filter(Boolean)];
}

/**
 * A shared secret comes from a file (its first line), never from the command line, where
 * the process list and the shell's history would keep it.
 */
function secretFrom(file: string): string {
  const secret = readFileSync(file, "utf8").split(/\r?\n/)[0]!;
  if (secret.length < 16 || secret.length > 128) throw new CliError(`the shared secret in ${file} is ${secret.length} characters; it must be 16 to 128 (RFC 2865 section 3 advises long, random secrets)`);
  return secret;
}

function describe(application: Application & { radiusSecret?: string; apiKey?: string }): string {
  const push = application.pushOtp ? `Push OTP on (${application.kind === "radius" ? `${application.pushMode} mode, ` : ""}${application.pushTimeoutSeconds} s)` : "Push OTP off";
  const lines = [`${application.id}  ${application.name} (${application.kind}), resource "${application.resourceName}", ${push}`];
  if (application.radiusAddresses) lines.push(`  clients ${application.radiusAddresses.join(", ") || "(none)"}`);
  if (application.radiusSecret) lines.push(`  shared secret ${application.radiusSecret}  (shown once: put it in the NAS now)`);
  if (application.apiKey) lines.push(`  API key ${application.apiKey}  (shown once)`);
  return lines.join("\n");
}

/** An application of the virtual server by id or (unique within it) name. */
async function resolveApplication(services: Services, virtualServerId: string, idOrName: string): Promise<Application> {
  const found = (await services.applications.list(installerPrincipal, virtualServerId)).filter((application) => application.id === idOrName || application.name === idOrName);
  if (found.length === 0) throw new CliError(`no application ${idOrName} in this virtual server`);
  return found[0]!;
}

/**
 * `tessera applications ...`: the RADIUS and REST clients that authenticate users, for
 * setting up a VPN from a shell. A running server sees a change within ten seconds (it
 * reads its RADIUS clients and API keys again that often); a change through the API
 * applies at once.
 */
export function registerApplicationCommands(program: Command, context: CliContext): void {
  const json = () => new Option("--json", "print one JSON object for scripts");
  const applications = program.command("applications").description("RADIUS and REST clients (VPNs, web applications) that authenticate users");

  applications
    .command("list")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(json())
    .action(async (options: { vs: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const items = await services.applications.list(installerPrincipal, await context.resolveVirtualServer(services, options.vs));
        context.print(!!options.json, { items }, () => (items.length === 0 ? "no applications" : items.map(describe).join("\n")));
      }),
    );

  applications
    .command("create")
    .description("a RADIUS client (addresses, shared secret made up and shown once unless --secret-file) or a REST client (API key shown once)")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .requiredOption("--name <name>", "unique within the virtual server")
    .addOption(new Option("--kind <kind>").choices(["radius", "rest"]).makeOptionMandatory())
    .option("--resource-name <name>", "what the phone shows the user signs in to (default: the name)")
    .option("--push", "Push OTP on: an empty passcode asks the phone")
    .addOption(new Option("--push-mode <mode>", "RADIUS push: hold the request, or answer Access-Challenge").choices(["hold", "challenge"]))
    .option("--push-timeout <seconds>", `how long a push login waits for the user (default ${PUSH_TIMEOUT_SECONDS.default}); below the NAS's own timeout`, pushTimeout)
    .option("--address <addresses>", "RADIUS client address or CIDR range; repeat or separate with commas", addresses)
    .option("--secret-file <file>", "RADIUS shared secret: the first line of this file")
    .addOption(json())
    .action(
      async (options: { vs: string; name: string; kind: "radius" | "rest"; resourceName?: string; push?: boolean; pushMode?: "hold" | "challenge"; pushTimeout?: number; address?: string[]; secretFile?: string; json?: boolean }) =>
        context.withServices(async (services) => {
          if (options.kind === "radius" && !options.address?.length) throw new CliError("a RADIUS client needs --address (the NAS's address or range)");
          if (options.kind === "rest" && (options.address || options.secretFile || options.pushMode)) throw new CliError("--address, --secret-file and --push-mode are for RADIUS clients");
          const created = await services.applications.create(installerPrincipal, {
            virtualServerId: await context.resolveVirtualServer(services, options.vs),
            name: options.name,
            kind: options.kind,
            resourceName: options.resourceName,
            pushOtp: !!options.push,
            pushMode: options.pushMode,
            pushTimeoutSeconds: options.pushTimeout,
            radiusAddresses: options.address,
            radiusSecret: options.secretFile ? secretFrom(options.secretFile) : undefined,
          });
          context.print(!!options.json, created, () => describe(created));
        }),
    );

  applications
    .command("update")
    .description("change what is given; the rest stays")
    .argument("<application>", "application id or name")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .option("--name <name>")
    .option("--resource-name <name>")
    .option("--push", "Push OTP on")
    .option("--no-push", "Push OTP off")
    .addOption(new Option("--push-mode <mode>").choices(["hold", "challenge"]))
    .option("--push-timeout <seconds>", "how long a push login waits for the user", pushTimeout)
    .option("--address <addresses>", "the new list of RADIUS client addresses or ranges (replaces the old one)", addresses)
    .option("--secret-file <file>", "a new RADIUS shared secret: the first line of this file")
    .option("--rotate-api-key", "a new API key for a REST client (shown once); the old one stops working")
    .addOption(json())
    .action(
      async (
        idOrName: string,
        options: { vs: string; name?: string; resourceName?: string; push?: boolean; pushMode?: "hold" | "challenge"; pushTimeout?: number; address?: string[]; secretFile?: string; rotateApiKey?: boolean; json?: boolean },
      ) =>
        context.withServices(async (services) => {
          const application = await resolveApplication(services, await context.resolveVirtualServer(services, options.vs), idOrName);
          const updated = await services.applications.update(installerPrincipal, application.id, {
            name: options.name,
            resourceName: options.resourceName,
            pushOtp: options.push,
            pushMode: options.pushMode,
            pushTimeoutSeconds: options.pushTimeout,
            radiusAddresses: options.address,
            radiusSecret: options.secretFile ? secretFrom(options.secretFile) : undefined,
            rotateApiKey: options.rotateApiKey,
          });
          context.print(!!options.json, updated, () => describe(updated));
        }),
    );

  applications
    .command("delete")
    .argument("<application>", "application id or name")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(json())
    .action(async (idOrName: string, options: { vs: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const application = await resolveApplication(services, await context.resolveVirtualServer(services, options.vs), idOrName);
        await services.applications.delete(installerPrincipal, application.id);
        context.print(!!options.json, { deleted: application.id }, () => `deleted ${application.name} (${application.id})`);
      }),
    );
}

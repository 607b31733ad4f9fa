import { Option, type Command } from "commander";
import type { Services } from "../core.js";
import { CliError } from "./errors.js";
import { installerPrincipal } from "../modules/operators/access.js";
import type { UserSelection } from "../modules/provisioning/selection.js";
import type { ProvisioningTask } from "../modules/provisioning/task.js";

export interface CliContext {
  withServices<T>(work: (services: Services) => Promise<T>): Promise<T>;
  resolveVirtualServer(services: Services, idOrName: string): Promise<string>;
  print(json: boolean, value: unknown, human: () => string): void;
}

function describeTask(task: ProvisioningTask): string {
  const c = task.counts;
  return [
    `task ${task.id} (${task.kind}, ${task.tokenType}${task.apps.length ? ` for ${task.apps.join(", ")}` : ""}) ${task.status}, stop date ${task.stopAt}`,
    `  ${c.total} users: ${c.emailed} emailed, ${c.pending} pending, ${c.enrolled} enrolled, ${c.expired} expired, ${c.cancelled} cancelled`,
  ].join("\n");
}

/** `tessera provision`, `tessera tasks ...` and `tessera migration ...`: the provisioning work from scripts. */
export function registerProvisioningCommands(program: Command, context: CliContext): void {
  const json = () => new Option("--json", "print one JSON object for scripts");

  program
    .command("provision")
    .description("provision tokens to users (a list, a group or everyone without a token) as one task; each gets an enrollment email")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .option("--users <userIds>", "comma-separated user ids")
    .option("--group <group>", "every member of a group")
    .option("--without-token", "every user who holds no token")
    .addOption(new Option("--type <type>", "token type").choices(["mobile", "hardware", "email"]).default("mobile"))
    .option("--apps <apps>", "comma-separated: tessera, otp-app (default: what the policy allows)")
    .option("--stop-at <iso>", "enrollment stop date (default: the policy's enrollment lifetime)")
    .addOption(json())
    .action(async (options: { vs: string; users?: string; group?: string; withoutToken?: boolean; type: "mobile" | "hardware" | "email"; apps?: string; stopAt?: string; json?: boolean }) =>
      context.withServices(async (services) => {
        if (!options.users && !options.group && !options.withoutToken) throw new CliError("say whom: --users, --group or --without-token");
        const virtualServerId = await context.resolveVirtualServer(services, options.vs);
        const users: UserSelection = options.users
          ? { userIds: options.users.split(",").map((id) => id.trim()).filter(Boolean) }
          : options.group
            ? { group: options.group }
            : { search: { hasToken: false } };
        const task = await services.provisioning.createTask(installerPrincipal, {
          virtualServerId,
          users,
          tokenType: options.type,
          apps: options.apps ? (options.apps.split(",").map((app) => app.trim()) as Array<"tessera" | "otp-app">) : undefined,
          stopAt: options.stopAt ? new Date(options.stopAt).toISOString() : undefined,
        });
        context.print(!!options.json, task, () => describeTask(task));
      }),
    );

  const tasks = program.command("tasks").description("provisioning tasks");
  tasks
    .command("list")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(json())
    .action(async (options: { vs: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const page = await services.provisioning.listTasks(installerPrincipal, await context.resolveVirtualServer(services, options.vs), { limit: 100 });
        context.print(!!options.json, page, () => page.items.map(describeTask).join("\n") || "no tasks");
      }),
    );
  tasks
    .command("show")
    .argument("<taskId>")
    .addOption(json())
    .action(async (taskId: string, options: { json?: boolean }) =>
      context.withServices(async (services) => {
        const task = await services.provisioning.getTask(installerPrincipal, taskId);
        const users = await services.provisioning.listTaskUsers(installerPrincipal, taskId, { limit: 1000 });
        context.print(!!options.json, { ...task, users: users.items }, () =>
          [describeTask(task), ...users.items.map((u) => `  ${u.userId.padEnd(24)} ${u.serial.padEnd(14)} ${u.state}`)].join("\n"),
        );
      }),
    );
  tasks
    .command("cancel")
    .argument("<taskId>")
    .description("remove a task: open enrollments die and their tokens return to inventory")
    .addOption(json())
    .action(async (taskId: string, options: { json?: boolean }) =>
      context.withServices(async (services) => {
        const task = await services.provisioning.cancelTask(installerPrincipal, taskId);
        context.print(!!options.json, task, () => describeTask(task));
      }),
    );

  const migration = program.command("migration").description("move users from a generic OTP app to the tessera app");
  migration
    .command("plan")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(json())
    .action(async (options: { vs: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const plan = await services.migration.plan(installerPrincipal, await context.resolveVirtualServer(services, options.vs));
        context.print(!!options.json, plan, () => `${plan.total} users on an OTP app: ${plan.notStarted} not started, ${plan.provisioned} provisioned, ${plan.moved} moved`);
      }),
    );
  migration
    .command("start")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .option("--stop-at <iso>", "enrollment stop date")
    .addOption(json())
    .action(async (options: { vs: string; stopAt?: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const task = await services.migration.start(installerPrincipal, await context.resolveVirtualServer(services, options.vs), {
          stopAt: options.stopAt ? new Date(options.stopAt).toISOString() : undefined,
        });
        context.print(!!options.json, { task }, () => (task ? describeTask(task) : "nobody left to start"));
      }),
    );
  migration
    .command("retire")
    .requiredOption("--vs <virtualServer>", "virtual server id or name")
    .addOption(json())
    .action(async (options: { vs: string; json?: boolean }) =>
      context.withServices(async (services) => {
        const result = await services.migration.retire(installerPrincipal, await context.resolveVirtualServer(services, options.vs));
        context.print(!!options.json, result, () => `retired ${result.retired} old tokens to inventory; ${result.reusedSince} of ${result.retiredEver} retired so far are in use again`);
      }),
    );
}

import { readFileSync } from "node:fs";
import os from "node:os";
import { Command, Option } from "commander";
import { AuthenticatorError, createAuthenticator } from "../core/authenticator.js";
import { createFileStore, defaultHome } from "./file-store.js";

const version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

const osNames: Record<string, string> = { linux: "Linux", darwin: "macOS", win32: "Windows", freebsd: "FreeBSD" };

function authenticatorFor(home: string) {
  return createAuthenticator({
    store: createFileStore(home),
    fetch,
    platform: { os: osNames[process.platform] ?? process.platform, osVersion: os.release(), deviceType: "desktop", appVersion: `cli ${version}` },
  });
}

function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human()}\n`);
}

const program = new Command("tessera-authenticator")
  .description("The tessera app on the command line: enroll tokens, read passcodes, set Autosend Passcode")
  .option("--home <dir>", "where keys are kept (mode 0600)", defaultHome())
  .showHelpAfterError();

const json = () => new Option("--json", "print one JSON object for scripts");
const home = () => program.opts<{ home: string }>().home;

program
  .command("enroll")
  .argument("<link>", "the auto-enrollment link from the enrollment email or page")
  .option("--no-push", "decline push notifications (No Thanks): Push OTP starts off")
  .addOption(json())
  .action(async (link: string, options: { push: boolean; json?: boolean }) => {
    const token = await authenticatorFor(home()).enroll(link, { pushPermitted: options.push });
    const { key: _key, ...shown } = token;
    print(!!options.json, shown, () =>
      [
        `enrolled ${token.serial} for ${token.userId} (${token.virtualServer.name})`,
        token.pushApplications.length ? `Push OTP works with: ${token.pushApplications.join(", ")}` : "no application accepts Push OTP yet",
      ].join("\n"),
    );
  });

program
  .command("list")
  .addOption(json())
  .action(async (options: { json?: boolean }) => {
    const tokens = (await authenticatorFor(home()).list()).map(({ key: _key, ...token }) => token);
    print(!!options.json, { tokens }, () => tokens.map((t) => `${t.serial.padEnd(14)} ${t.userId.padEnd(20)} ${t.virtualServer.name}  ${t.server}`).join("\n") || "no tokens");
  });

program
  .command("code")
  .argument("[serial]", "which token (default: the first)")
  .addOption(json())
  .action(async (serial: string | undefined, options: { json?: boolean }) => {
    const code = await authenticatorFor(home()).code(serial);
    print(!!options.json, code, () => `${code.passcode}  (${code.serial}, ${code.secondsLeft} s left)`);
  });

program
  .command("settings")
  .addOption(new Option("--autosend <state>", "Autosend Passcode: answer push logins with the passcode").choices(["on", "off"]).makeOptionMandatory())
  .addOption(json())
  .action(async (options: { autosend: "on" | "off"; json?: boolean }) => {
    const results = await authenticatorFor(home()).setAutosend(options.autosend === "on");
    print(!!options.json, { autosendPasscode: options.autosend === "on", servers: results }, () => `Autosend Passcode ${options.autosend}`);
  });

program
  .command("listen")
  .description("wait for push logins, print each and ask approve or deny (or answer with --answer)")
  .addOption(new Option("--answer <decision>", "answer every login without asking (for scripts)").choices(["approve", "deny", "fraud"]))
  .option("--once", "stop after the first login answered")
  .addOption(json())
  .action(async (options: { answer?: "approve" | "deny" | "fraud"; once?: boolean; json?: boolean }) => {
    const authenticator = authenticatorFor(home());
    const ask = async (question: string): Promise<"approve" | "deny" | "fraud"> => {
      const readline = await import("node:readline/promises");
      const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
      const reply = (await rl.question(question)).trim().toLowerCase();
      rl.close();
      return reply.startsWith("y") || reply === "approve" ? "approve" : reply.startsWith("f") ? "fraud" : "deny";
    };
    // The live connection delivers each login as it comes; one at a time is answered.
    const stop = new AbortController();
    const answered = new Set<string>();
    let queue: Promise<void> = Promise.resolve();
    await authenticator.watchChallenges(
      (challenge) => {
        queue = queue.then(async () => {
          if (answered.has(challenge.id) || stop.signal.aborted) return;
          answered.add(challenge.id);
          const line = `sign-in to ${challenge.resourceName} from ${challenge.source} at ${challenge.createdAt}, number ${challenge.numberToMatch}`;
          if (!options.json) process.stdout.write(`${line}\n`);
          const decision = options.answer ?? (await ask("approve? [y]es / [n]o / [f]raud: "));
          const result = await authenticator.answerChallenge(challenge, decision).catch((error: unknown) => ({ status: `failed: ${(error as Error).message}` }));
          print(!!options.json, { challenge, decision, status: result.status }, () => `${decision}: ${result.status}`);
          if (options.once) stop.abort();
        });
        return queue;
      },
      { signal: stop.signal },
    );
  });

program
  .command("remove")
  .argument("<serial>")
  .action(async (serial: string) => {
    await authenticatorFor(home()).remove(serial);
    process.stdout.write(`removed ${serial} from this device\n`);
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof AuthenticatorError) {
    process.stderr.write(`error ${error.code}: ${error.message}\n`);
    process.exitCode = 1;
  } else if (error instanceof TypeError && /fetch failed/.test(error.message)) {
    process.stderr.write(`error UNREACHABLE: cannot reach the server (${String((error as { cause?: { code?: string } }).cause?.code ?? "network error")})\n`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}

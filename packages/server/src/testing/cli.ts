import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import type { TestDatabase } from "./databases.js";

/** The real `tessera` binary (compiled CLI in dist/, so `tsc -b` must have run). */
export const bin = fileURLToPath(new URL("../../bin/tessera.js", import.meta.url));
export const masterKeyHex = "5a".repeat(32);

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of the parent without any Tessera setting or database of its own, so
 * only what the test gives reaches the child.
 */
export function cliEnvironment(database: TestDatabase, overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("TESSERA_") && key !== "DATABASE_URL") env[key] = value;
  }
  // Servers started by tests take free ports, RADIUS included.
  Object.assign(env, database.env, { TESSERA_MASTER_KEY: masterKeyHex, TESSERA_LOG_LEVEL: "silent", TESSERA_RADIUS_PORT: "0" });
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

export function collect(child: ChildProcess): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export function tessera(args: string[], env: NodeJS.ProcessEnv): Promise<CliRun> {
  return collect(spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] }));
}

/** Runs a command that must succeed with --json and returns its one JSON object. */
export async function tesseraJson<T>(args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  const run = await tessera([...args, "--json"], env);
  expect(run, `tessera ${args.join(" ")} failed: ${run.stderr}`).toMatchObject({ code: 0 });
  return singleJsonObject<T>(run.stdout);
}

export function singleJsonObject<T>(stdout: string): T {
  const lines = stdout.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(1);
  const value: unknown = JSON.parse(lines[0]!);
  expect(value).toBeTypeOf("object");
  return value as T;
}


/**
 * `tessera serve` on a free HTTP port (and RADIUS on a free one, as cliEnvironment sets);
 * resolves once it says it is listening, with its URL and its RADIUS port (null when off).
 */
export async function startServe(env: NodeJS.ProcessEnv): Promise<{ url: string; radiusPort: number | null; child: ChildProcess; exit: Promise<CliRun> }> {
  const child = spawn(process.execPath, [bin, "serve"], { env: { ...env, TESSERA_HTTP_PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
  const exit = collect(child);
  const started = await new Promise<{ url: string; radiusPort: number | null }>((resolve, reject) => {
    let seen = "";
    child.stdout!.on("data", (chunk: string) => {
      seen += chunk;
      // It prints "Tessera is listening on URL", then "  RADIUS     udp HOST:PORT" (or "off").
      const url = /Tessera is listening on (http:\/\/\S+)/.exec(seen);
      const radius = /^\s*RADIUS\s+(?:udp \S+:(\d+)|off)/m.exec(seen);
      if (url && radius) resolve({ url: url[1]!, radiusPort: radius[1] ? Number(radius[1]) : null });
    });
    void exit.then((run) => reject(new Error(`tessera serve exited (${run.code ?? run.signal}) before listening: ${run.stderr}`)));
  });
  return { ...started, child, exit };
}

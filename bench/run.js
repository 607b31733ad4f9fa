// Runs the benchmarks, each in its own node process (clean memory figures, no shared
// caches), prints a summary and writes every result to bench/out/results.json.
//
//   npm run bench                          every benchmark
//   npm run bench -- users-import          only the ones named
//   npm run bench -- token-search --pg     flags go to every benchmark run
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { clearTimeout, setTimeout } from "node:timers";
import { fileURLToPath } from "node:url";
import { fmt, machine, printTable, tempDir } from "./lib.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const benchmarks = ["users-import", "token-search", "provisioning", "outbox-send", "rest-auth", "radius-auth", "push-roundtrip"];
/** No benchmark may run longer than this; it is stopped (and cleans up on SIGTERM). */
const TIME_LIMIT_MS = 20 * 60 * 1000;

const args = process.argv.slice(2);
/** @type {string[]} */
const names = [];
/** @type {string[]} */
const passThrough = [];
for (const [index, arg] of args.entries()) {
  if (arg.startsWith("--")) passThrough.push(arg);
  else if (benchmarks.includes(arg)) names.push(arg);
  else if (/^\d+$/.test(arg) && args[index - 1]?.startsWith("--")) passThrough.push(arg);
  else {
    console.error(`unknown benchmark "${arg}"; known: ${benchmarks.join(", ")}`);
    process.exit(2);
  }
}
const selected = names.length > 0 ? names : benchmarks;

/**
 * @param {string} name
 * @param {string} resultFile
 * @returns {Promise<{ code: number | null, signal: string | null, timedOut: boolean }>}
 */
function runOne(name, resultFile) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--expose-gc", path.join(here, `${name}.js`), ...passThrough], {
      stdio: "inherit",
      env: { ...process.env, BENCH_RESULT_FILE: resultFile },
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      console.error(`${name}: over ${TIME_LIMIT_MS / 60000} minutes, stopping it`);
      child.kill("SIGTERM");
    }, TIME_LIMIT_MS);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut });
    });
  });
}

const scratch = tempDir("run");
/** @type {any[]} */
const results = [];
try {
  for (const name of selected) {
    const resultFile = path.join(scratch, `${name}.json`);
    const startedAt = new Date().toISOString();
    const outcome = await runOne(name, resultFile);
    let result;
    try {
      result = JSON.parse(readFileSync(resultFile, "utf8"));
    } catch {
      result = null;
    }
    if (outcome.code === 0 && result) results.push({ ...result, startedAt, args: passThrough });
    else {
      const why = outcome.timedOut ? "timed out" : `exited with ${outcome.signal ?? outcome.code}`;
      console.error(`\n${name}: ${why}`);
      results.push({ name, startedAt, args: passThrough, error: why });
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

// The summary: every figure once more, side by side.
console.log("\n== summary ==");
/** @type {string[][]} */
const rows = [["benchmark", "figure", "value", "target", "result", "baseline", "ratio"]];
for (const result of results) {
  if (result.error) {
    rows.push([result.name, "(no result)", result.error, "", "ERROR", "", ""]);
    continue;
  }
  const label = result.inputs?.database ? `${result.name} (${result.inputs.database})` : result.name;
  for (const figure of result.figures) {
    if (typeof figure.unit === "string" && figure.unit.endsWith("/s") && figure.target) {
      // Throughputs (users/s, mails/s): higher is better.
      rows.push([label, figure.name, `${fmt(figure.value)} ${figure.unit}`, `>= ${fmt(figure.target.value)}`, figure.pass ? "PASS" : "FAIL", `${fmt(figure.baseline.value)} ${figure.unit}`, `${fmt(figure.ratio, 2)}x`]);
    } else if (figure.name === "peak RSS") {
      rows.push([label, figure.name, `${fmt(figure.value, 1)} MiB`, "", "", `start ${fmt(figure.rssBeforeMiB, 1)} MiB`, ""]);
    } else if (figure.percentiles) {
      // Latencies: the percentile the target is set on (p95 unless the figure says).
      const at = figure.target.of ?? "p95";
      rows.push([
        label,
        `${figure.name} ${at}`,
        `${fmt(figure.percentiles[at], 2)} ms`,
        `${figure.target.op ?? "<="} ${fmt(figure.target.value)} ms`,
        figure.pass ? "PASS" : "FAIL",
        `${fmt(figure.baseline.percentiles[at], 2)} ms`,
        `${fmt(figure.ratio, 2)}x`,
      ]);
    }
  }
}
printTable(rows);

const outDir = path.join(here, "out");
mkdirSync(outDir, { recursive: true });
const outFile = path.join(outDir, "results.json");
writeFileSync(outFile, JSON.stringify({ generatedAt: new Date().toISOString(), machine: machine(), benchmarks: results }, null, 2) + "\n");
console.log(`\nresults: ${path.relative(process.cwd(), outFile) || outFile}`);
process.exitCode = results.some((result) => result.error) ? 1 : 0;

import { fail } from "../../errors.js";
import { parsePskc } from "./seed-files/pskc.js";
import { parseSeedCsv } from "./seed-files/csv.js";
import type { ImportedSeed } from "./seed-files/seed.js";

/** Reads a seed file of either format; any problem refuses the whole file with every problem listed. */
export function parseSeedFile(format: "pskc" | "csv", content: string, preSharedKey?: Buffer): ImportedSeed[] {
  const result = format === "pskc" ? parsePskc(content, { preSharedKey }) : parseSeedCsv(content);
  if (result.ok) {
    if (result.seeds.length === 0) throw fail("SEED_FILE_INVALID", { problem: "it holds no tokens" });
    return result.seeds;
  }
  const first = result.problems[0];
  const where = first?.line ? `line ${first.line}: ` : first?.serial ? `${first.serial}: ` : "";
  const more = result.problems.length > 1 ? ` (and ${result.problems.length - 1} more)` : "";
  throw fail("SEED_FILE_INVALID", { problem: `${where}${first?.problem ?? "unreadable"}${more}` }, { problems: result.problems });
}

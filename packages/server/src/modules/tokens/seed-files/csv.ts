import { decodeBase32 } from "@tessera/otp";
import { CsvError, parse } from "csv-parse/sync";
import {
  DEFAULT_PERIOD_SECONDS,
  parseHashAlgorithm,
  parseNonNegativeInteger,
  parsePeriod,
  PERIOD_RANGE_TEXT,
  validateSecret,
  validateSerial,
  type HashAlgorithm,
  type ImportedSeed,
  type OtpMode,
  type SeedFileResult,
  type SeedProblem,
} from "./seed.js";

/**
 * The CSV that vendors without PSKC, and spreadsheets, produce: a header row naming
 * the columns, then one token per row. Only serial and seed are required.
 */

type Field = "serial" | "seed" | "mode" | "digits" | "period" | "algorithm" | "counter";

/**
 * Header names after lower-casing and dropping "_", "-" and spaces ("Serial_No" → "serialno").
 * A Map, so a header such as "constructor" cannot find a prototype member.
 */
const COLUMN_NAMES = new Map<string, Field>([
  ["serial", "serial"],
  ["serialno", "serial"],
  ["serialnumber", "serial"],
  ["seed", "seed"],
  ["secret", "seed"],
  ["type", "mode"],
  ["mode", "mode"],
  ["otpmode", "mode"],
  ["digits", "digits"],
  ["period", "period"],
  ["periodseconds", "period"],
  ["algorithm", "algorithm"],
  ["counter", "counter"],
]);

const REQUIRED: Field[] = ["serial", "seed"];

type Columns = Map<Field, number>;

interface Row {
  line: number;
  fields: string[];
}

type RowRead = { ok: true; seed: ImportedSeed } | { ok: false; serial?: string; problems: string[] };

export function parseSeedCsv(text: string): SeedFileResult {
  const rows = readRows(text);
  if (!rows.ok) return rows;
  const [header, ...records] = rows.rows;
  if (!header) return fail([{ problem: "the file is empty: a header row is required" }]);
  const columns = readHeader(header);
  if (!columns.ok) return columns;
  if (records.length === 0) return fail([{ line: header.line, problem: "the file has a header but no token rows" }]);

  const seeds: ImportedSeed[] = [];
  const problems: SeedProblem[] = [];
  const firstLineOf = new Map<string, number>();
  for (const row of records) {
    const read = readRow(row, columns.columns, header.fields.length);
    const serial = read.ok ? read.seed.serial : read.serial;
    const at = (problem: string): SeedProblem => (serial === undefined ? { line: row.line, problem } : { line: row.line, serial, problem });
    if (read.ok) seeds.push(read.seed);
    else problems.push(...read.problems.map(at));
    if (serial !== undefined) {
      const first = firstLineOf.get(serial);
      if (first === undefined) firstLineOf.set(serial, row.line);
      else problems.push(at(`serial ${serial} is also on line ${first}`));
    }
  }
  return problems.length > 0 ? fail(problems) : { ok: true, seeds };
}

function fail(problems: SeedProblem[]): SeedFileResult {
  return { ok: false, problems };
}

// ---- CSV syntax -----------------------------------------------------------------------

/**
 * Rows with the line each starts on. Line endings are made "\n" first so line numbers
 * match what an editor shows whatever the file's origin; a quoted field may span lines,
 * so a row's first line is the parser's line count less the newlines inside its fields.
 */
function readRows(text: string): { ok: true; rows: Row[] } | { ok: false; problems: SeedProblem[] } {
  const rows: Row[] = [];
  try {
    parse(text.replace(/\r\n?/g, "\n"), {
      bom: true,
      // Spreadsheets in many locales save with ";" or tabs; none can occur in a serial or seed.
      delimiter: [",", ";", "\t"],
      relax_column_count: true,
      skip_empty_lines: true,
      on_record: (record: string[], context) => {
        const newlines = record.reduce((count, field) => count + (field.match(/\n/g)?.length ?? 0), 0);
        const fields = record.map((field) => field.trim());
        if (fields.some((field) => field !== "")) rows.push({ line: context.lines - newlines, fields });
        return null;
      },
    });
  } catch (error) {
    if (!(error instanceof CsvError)) throw error;
    const line = typeof error["lines"] === "number" ? error["lines"] : undefined;
    const problem = `the file is not valid CSV: ${error.message}`;
    return { ok: false, problems: [line === undefined ? { problem } : { line, problem }] };
  }
  return { ok: true, rows };
}

function normaliseColumnName(name: string): string {
  return name.toLowerCase().replace(/[\s_-]/g, "");
}

/** Unknown columns are ignored, so vendor extras (batch, model, notes) do no harm. */
function readHeader(header: Row): { ok: true; columns: Columns } | { ok: false; problems: SeedProblem[] } {
  const columns: Columns = new Map();
  const problems: SeedProblem[] = [];
  header.fields.forEach((name, index) => {
    const field = COLUMN_NAMES.get(normaliseColumnName(name));
    if (field === undefined) return;
    const earlier = columns.get(field);
    if (earlier === undefined) columns.set(field, index);
    else problems.push({ line: header.line, problem: `columns "${header.fields[earlier]}" and "${name}" both give the ${field}` });
  });
  const missing = REQUIRED.filter((field) => !columns.has(field));
  if (missing.length > 0) {
    problems.push({ line: header.line, problem: `the header lacks the required column${missing.length > 1 ? "s" : ""} ${missing.join(" and ")}` });
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, columns };
}

// ---- Rows -----------------------------------------------------------------------------

function readRow(row: Row, columns: Columns, headerLength: number): RowRead {
  const value = (field: Field): string => {
    const index = columns.get(field);
    return index === undefined ? "" : (row.fields[index] ?? "");
  };
  const problems: string[] = [];
  if (row.fields.length !== headerLength) {
    // A stray or missing delimiter shifts every later value into the wrong column.
    problems.push(`the row has ${row.fields.length} fields but the header has ${headerLength}`);
  }
  const serialText = value("serial");
  const serialProblem = serialText === "" ? "the serial is missing" : validateSerial(serialText);
  if (serialProblem) problems.push(serialText === "" ? serialProblem : `serial "${serialText}": ${serialProblem}`);
  const secret = collect(problems, readSeed(value("seed")));
  const otpMode = collect(problems, readMode(value("mode")));
  const digits = collect(problems, readDigits(value("digits")));
  const algorithm = collect(problems, readAlgorithm(value("algorithm")));
  // Mixed files fill every column: the period only means something for TOTP, the counter for HOTP.
  const periodSeconds = otpMode === "totp" ? collect(problems, readPeriod(value("period"))) : DEFAULT_PERIOD_SECONDS;
  const counter = otpMode === "hotp" ? collect(problems, readCounter(value("counter"))) : 0;
  const serial = serialText === "" ? undefined : serialText;
  if (
    problems.length > 0 ||
    serial === undefined ||
    secret === undefined ||
    otpMode === undefined ||
    digits === undefined ||
    algorithm === undefined ||
    periodSeconds === undefined ||
    counter === undefined
  ) {
    return serial === undefined ? { ok: false, problems } : { ok: false, serial, problems };
  }
  return { ok: true, seed: { serial, secret, otpMode, digits, periodSeconds, algorithm, counter } };
}

/** A cell's value, or a problem text. */
type Cell<T> = { value: T } | { problem: string };

function collect<T>(problems: string[], cell: Cell<T>): T | undefined {
  if ("value" in cell) return cell.value;
  problems.push(cell.problem);
  return undefined;
}

/**
 * Hex when every character is a hex digit and the length is even, base32 (RFC 4648
 * section 6) otherwise. Spaces are dropped: seeds are often printed in groups.
 */
function readSeed(text: string): Cell<Buffer> {
  const compact = text.replace(/\s/g, "");
  if (compact === "") return { problem: "the seed is missing" };
  const secret = /^(?:[0-9a-fA-F]{2})+$/.test(compact) ? Buffer.from(compact, "hex") : decodeWellFormedBase32(compact);
  if (!secret) return { problem: "the seed is neither hex (an even number of 0-9, a-f) nor base32 (A-Z, 2-7)" };
  const problem = validateSecret(secret);
  return problem ? { problem } : { value: secret };
}

/**
 * decodeBase32 accepts any length and "=" anywhere; a seed cut short would decode to
 * a wrong key. RFC 4648 section 6: 8 characters carry 5 bytes, so an unpadded length
 * leaves 0, 2, 4, 5 or 7 characters over, and padding, if any, completes the 8.
 */
function decodeWellFormedBase32(text: string): Buffer | null {
  const match = /^([A-Za-z2-7]+)(=*)$/.exec(text);
  if (!match) return null;
  const data = match[1] ?? "";
  const padding = match[2] ?? "";
  if (![0, 2, 4, 5, 7].includes(data.length % 8)) return null;
  if (padding !== "" && (data.length + padding.length) % 8 !== 0) return null;
  const bytes = decodeBase32(data);
  return bytes ? Buffer.from(bytes) : null;
}

function readMode(text: string): Cell<OtpMode> {
  const mode = text.toLowerCase();
  if (mode === "") return { value: "totp" };
  return mode === "totp" || mode === "hotp" ? { value: mode } : { problem: `the type "${text}" is neither totp nor hotp` };
}

function readDigits(text: string): Cell<6 | 8> {
  if (text === "" || text === "6") return { value: 6 };
  if (text === "8") return { value: 8 };
  return { problem: `digits "${text}" is not 6 or 8` };
}

function readPeriod(text: string): Cell<number> {
  if (text === "") return { value: DEFAULT_PERIOD_SECONDS };
  const period = parsePeriod(text);
  return period === null ? { problem: `the period "${text}" is not ${PERIOD_RANGE_TEXT}` } : { value: period };
}

function readAlgorithm(text: string): Cell<HashAlgorithm> {
  if (text === "") return { value: "SHA1" };
  const algorithm = parseHashAlgorithm(text);
  return algorithm ? { value: algorithm } : { problem: `the algorithm "${text}" is not sha1, sha256 or sha512` };
}

function readCounter(text: string): Cell<number> {
  if (text === "") return { value: 0 };
  const counter = parseNonNegativeInteger(text);
  return counter === null ? { problem: `the counter "${text}" is not a non-negative integer` } : { value: counter };
}

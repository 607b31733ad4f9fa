import { describe, expect, it } from "vitest";
import { parseSeedCsv } from "./csv.js";
import type { SeedFileResult, SeedProblem } from "./seed.js";

// RFC 4226 Appendix D secret, "12345678901234567890", in both encodings the format accepts.
const SECRET = Buffer.from("12345678901234567890");
const SECRET_HEX = "3132333435363738393031323334353637383930";
const SECRET_BASE32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

function problemsOf(result: SeedFileResult): SeedProblem[] {
  if (result.ok) throw new Error(`expected problems, got ${result.seeds.length} seeds`);
  return result.problems;
}

function seedsOf(result: SeedFileResult) {
  if (!result.ok) throw new Error(`expected seeds, got ${JSON.stringify(result.problems)}`);
  return result.seeds;
}

function csv(...lines: string[]): string {
  return `${lines.join("\n")}\n`;
}

describe("parseSeedCsv: reading", () => {
  it("reads serial and seed with the defaults: TOTP, 6 digits, 30 s, SHA1", () => {
    expect(seedsOf(parseSeedCsv(csv("serial,seed", `HW-1,${SECRET_HEX}`)))).toEqual([
      { serial: "HW-1", secret: SECRET, otpMode: "totp", digits: 6, periodSeconds: 30, algorithm: "SHA1", counter: 0 },
    ]);
  });

  it("reads every column", () => {
    const text = csv(
      "serial,secret,type,digits,period,algorithm,counter",
      `T-1,${SECRET_HEX},totp,8,60,sha256,`,
      `H-1,${SECRET_HEX},HOTP,6,,HMAC-SHA512,17`,
    );
    expect(seedsOf(parseSeedCsv(text))).toEqual([
      { serial: "T-1", secret: SECRET, otpMode: "totp", digits: 8, periodSeconds: 60, algorithm: "SHA256", counter: 0 },
      { serial: "H-1", secret: SECRET, otpMode: "hotp", digits: 6, periodSeconds: 30, algorithm: "SHA512", counter: 17 },
    ]);
  });

  it("matches column names ignoring case and underscores, and ignores unknown columns", () => {
    const text = csv("Batch,SERIAL_NO,Seed,OTP_Mode,Period_Seconds,constructor", `b7,HW-1,${SECRET_HEX},totp,45,spare`);
    expect(seedsOf(parseSeedCsv(text))).toEqual([
      { serial: "HW-1", secret: SECRET, otpMode: "totp", digits: 6, periodSeconds: 45, algorithm: "SHA1", counter: 0 },
    ]);
  });

  it.each([
    ["upper-case hex", SECRET_HEX.toUpperCase()],
    ["base32", SECRET_BASE32],
    ["lower-case base32", SECRET_BASE32.toLowerCase()],
    ["base32 in groups of four", SECRET_BASE32.replace(/(.{4})/g, "$1 ").trim()],
  ])("decodes the seed as %s", (_name, seed) => {
    expect(seedsOf(parseSeedCsv(csv("serial,seed", `HW-1,${seed}`)))[0]?.secret).toEqual(SECRET);
  });

  it("decodes base32 with and without padding", () => {
    // 17 bytes: 28 base32 characters, padded to 32.
    const secret = Buffer.from("12345678901234567");
    const text = csv("serial,seed", "P-1,GEZDGNBVGY3TQOJQGEZDGNBVGY3Q====", "P-2,GEZDGNBVGY3TQOJQGEZDGNBVGY3Q");
    expect(seedsOf(parseSeedCsv(text)).map((seed) => seed.secret)).toEqual([secret, secret]);
  });

  it("skips empty and blank lines, keeping file line numbers in problems", () => {
    const text = csv("serial,seed", "", `HW-1,${SECRET_HEX}`, "   ", ",,", "HW-2,not-a-seed");
    expect(problemsOf(parseSeedCsv(text))).toEqual([{ line: 6, serial: "HW-2", problem: expect.stringContaining("neither hex") }]);
  });

  it("reads Windows line endings, a byte order mark and quoted fields", () => {
    const text = `\uFEFFserial,seed\r\n"HW-1","${SECRET_HEX}"\r\n\r\nHW-2,${SECRET_BASE32}\r\n`;
    expect(seedsOf(parseSeedCsv(text)).map((seed) => seed.serial)).toEqual(["HW-1", "HW-2"]);
  });

  it("reads semicolon-separated files as spreadsheets save them in many locales", () => {
    expect(seedsOf(parseSeedCsv(csv("serial;seed;digits", `HW-1;${SECRET_HEX};8`)))[0]?.digits).toBe(8);
  });

  it("ignores the period on HOTP rows and the counter on TOTP rows, as mixed files fill both", () => {
    const text = csv("serial,seed,type,period,counter", `H-1,${SECRET_HEX},hotp,0,5`, `T-1,${SECRET_HEX},totp,60,x`);
    expect(seedsOf(parseSeedCsv(text)).map(({ periodSeconds, counter }) => ({ periodSeconds, counter }))).toEqual([
      { periodSeconds: 30, counter: 5 },
      { periodSeconds: 60, counter: 0 },
    ]);
  });
});

describe("parseSeedCsv: refusals", () => {
  it("refuses a header without the required columns, in one problem", () => {
    expect(problemsOf(parseSeedCsv(csv("id,key", `HW-1,${SECRET_HEX}`)))).toEqual([
      { line: 1, problem: "the header lacks the required columns serial and seed" },
    ]);
  });

  it("refuses two columns that give the same field", () => {
    expect(problemsOf(parseSeedCsv(csv("serial,seed,secret", `HW-1,${SECRET_HEX},${SECRET_HEX}`)))).toEqual([
      { line: 1, problem: 'columns "seed" and "secret" both give the seed' },
    ]);
  });

  it("refuses an empty file and a file with only a header", () => {
    expect(problemsOf(parseSeedCsv(""))[0]?.problem).toContain("header row is required");
    expect(problemsOf(parseSeedCsv(csv("serial,seed")))).toEqual([{ line: 1, problem: "the file has a header but no token rows" }]);
  });

  it("refuses duplicate serials, naming the first line", () => {
    const text = csv("serial,seed", `HW-1,${SECRET_HEX}`, `HW-2,${SECRET_HEX}`, `HW-1,${SECRET_BASE32}`);
    expect(problemsOf(parseSeedCsv(text))).toEqual([{ line: 4, serial: "HW-1", problem: "serial HW-1 is also on line 2" }]);
  });

  it("refuses invalid serials and serials reserved for generated tokens", () => {
    const text = csv("serial,seed", `bad serial,${SECRET_HEX}`, `MP0000000017,${SECRET_HEX}`, `,${SECRET_HEX}`);
    expect(problemsOf(parseSeedCsv(text))).toEqual([
      { line: 2, serial: "bad serial", problem: expect.stringContaining("1 to 64 letters") },
      { line: 3, serial: "MP0000000017", problem: expect.stringContaining("reserved for generated serials") },
      { line: 4, problem: "the serial is missing" },
    ]);
  });

  it("refuses seeds that are missing, short or not hex or base32", () => {
    const text = csv(
      "serial,seed",
      "S-1,",
      "S-2,00112233445566778899aabbccddee",
      "S-3,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
      "S-4,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQO",
      "S-5,GEZDGNBVGY3TQOJQ=GEZDGNBVGY3TQOJQ",
    );
    expect(problemsOf(parseSeedCsv(text))).toEqual([
      { line: 2, serial: "S-1", problem: "the seed is missing" },
      { line: 3, serial: "S-2", problem: "the secret is 120 bits; at least 128 are required (RFC 4226 section 4)" },
      { line: 4, serial: "S-3", problem: expect.stringContaining("neither hex") },
      // 30 characters cannot end a base32 text (RFC 4648 section 6): a seed cut short.
      { line: 5, serial: "S-4", problem: expect.stringContaining("neither hex") },
      { line: 6, serial: "S-5", problem: expect.stringContaining("neither hex") },
    ]);
  });

  it("treats odd-length hex as base32, which then fails", () => {
    expect(problemsOf(parseSeedCsv(csv("serial,seed", `HW-1,${SECRET_HEX}0`)))[0]?.problem).toContain("neither hex");
  });

  it("refuses bad type, digits, period, algorithm and counter values", () => {
    const text = csv(
      "serial,seed,type,digits,period,algorithm,counter",
      `A-1,${SECRET_HEX},motp,6,30,sha1,0`,
      `A-2,${SECRET_HEX},totp,7,30,sha1,0`,
      `A-3,${SECRET_HEX},totp,6,5,sha1,0`,
      `A-4,${SECRET_HEX},totp,6,301,sha1,0`,
      `A-5,${SECRET_HEX},totp,6,30,md5,0`,
      `A-6,${SECRET_HEX},hotp,6,30,sha1,-1`,
      `A-7,${SECRET_HEX},hotp,6,30,sha1,1.5`,
    );
    expect(problemsOf(parseSeedCsv(text))).toEqual([
      { line: 2, serial: "A-1", problem: 'the type "motp" is neither totp nor hotp' },
      { line: 3, serial: "A-2", problem: 'digits "7" is not 6 or 8' },
      { line: 4, serial: "A-3", problem: 'the period "5" is not 10 to 300 seconds' },
      { line: 5, serial: "A-4", problem: 'the period "301" is not 10 to 300 seconds' },
      { line: 6, serial: "A-5", problem: 'the algorithm "md5" is not sha1, sha256 or sha512' },
      { line: 7, serial: "A-6", problem: 'the counter "-1" is not a non-negative integer' },
      { line: 8, serial: "A-7", problem: 'the counter "1.5" is not a non-negative integer' },
    ]);
  });

  it("refuses a row whose field count differs from the header", () => {
    const text = csv("serial,seed,digits", `HW-1,${SECRET_HEX}`, `HW-2,${SECRET_HEX},6,extra`);
    expect(problemsOf(parseSeedCsv(text))).toEqual([
      { line: 2, serial: "HW-1", problem: "the row has 2 fields but the header has 3" },
      { line: 3, serial: "HW-2", problem: "the row has 4 fields but the header has 3" },
    ]);
  });

  it("reports an unclosed quote as a problem instead of throwing", () => {
    const problems = problemsOf(parseSeedCsv(csv("serial,seed", `HW-1,${SECRET_HEX}`, `"HW-2,${SECRET_HEX}`)));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.problem).toContain("not valid CSV");
  });

  it("reports a stray quote inside a field as a problem with its line", () => {
    expect(problemsOf(parseSeedCsv(csv("serial,seed", `HW-1,${SECRET_HEX}`, `HW"2,${SECRET_HEX}`)))).toEqual([
      { line: 3, problem: expect.stringContaining("not valid CSV") },
    ]);
  });

  it("numbers a row after a quoted field spanning lines by the line it starts on", () => {
    const text = csv("serial,seed,notes", `HW-1,${SECRET_HEX},"two`, `lines"`, "HW-2,not-a-seed,");
    expect(problemsOf(parseSeedCsv(text))).toEqual([{ line: 4, serial: "HW-2", problem: expect.stringContaining("neither hex") }]);
  });

  it("lists every problem in the file and returns no seeds", () => {
    const text = csv("serial,seed,digits", `OK-1,${SECRET_HEX},6`, "BAD-1,00,6", `BAD-2,${SECRET_HEX},9`, `OK-2,${SECRET_HEX},8`);
    expect(problemsOf(parseSeedCsv(text)).map((problem) => problem.line)).toEqual([3, 4]);
  });
});

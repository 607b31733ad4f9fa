import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import SQLite from "better-sqlite3";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createServices, type Services } from "../core.js";
import { createKeyring, parseMasterKey } from "../crypto/keyring.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { openStorage } from "../storage/database.js";
import { cliEnvironment, collect, masterKeyHex, singleJsonObject, startServe, tessera, tesseraJson } from "../testing/cli.js";
import { createTestDatabase, describeEachDatabase, type TestDatabase } from "../testing/databases.js";

/**
 * The real `tessera` binary run as a child process against a real database, the way an
 * installer or a script runs it: arguments in, text or one JSON object out, exit status.
 * The compiled CLI in dist/ is used, so `tsc -b` must have run (`npm test` does).
 */

const repositoryRoot = fileURLToPath(new URL("../../../../", import.meta.url));

// RFC 4226 Appendix D secret, "12345678901234567890", in the encodings seed files use.
const SECRET = Buffer.from("12345678901234567890");
const SECRET_HEX = SECRET.toString("hex");
const SECRET_BASE32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const SECRET_BASE64 = SECRET.toString("base64");

type Row = Record<string, unknown>;

/** Reads the database the CLI wrote, with its own connection. */
async function query(database: TestDatabase, text: string, params: unknown[] = []): Promise<Row[]> {
  if (database.target.kind === "sqlite") {
    const db = new SQLite(database.target.file, { readonly: true, fileMustExist: true });
    try {
      return db.prepare(text.replace(/\$\d+/g, "?")).all(...params) as Row[];
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: database.target.url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as Row[];
  } finally {
    await client.end();
  }
}

async function countOf(database: TestDatabase, table: string): Promise<number> {
  const [row] = await query(database, `select count(*) as n from ${table}`);
  return Number(row!.n);
}

interface Bootstrap {
  virtualServerId: string;
  virtualServerName: string;
  operatorId: string;
  operatorEmail: string;
  password: string;
  apiKey: string;
}

interface UserImportReport {
  imported: number;
  failed: number;
  errors: Array<{ line: number; userId: string | null; code: string; message: string }>;
}

interface TokenView {
  serial: string;
  type: string;
  state: string;
  virtualServerId: string;
  user: unknown;
  otp: { mode: string; algorithm: string; digits: number; periodSeconds: number };
  hasKey: boolean;
}

interface TokenPage {
  items: TokenView[];
  nextCursor: string | null;
}

interface ChainVerdict {
  ok: boolean;
  records: number;
  brokenAtSeq?: number;
  problem?: string;
}

const seedCsvFile = (...rows: string[]) => `serial,seed,type,digits,period\n${rows.join("\n")}\n`;

/** RFC 6030 Figure 2: one HOTP key with its secret in plain, 8 decimal digits, counter 0. */
function plainPskc(serial: string, secretBase64: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>Manufacturer</Manufacturer>
      <SerialNo>${serial}</SerialNo>
    </DeviceInfo>
    <CryptoModuleInfo>
      <Id>CM_ID_001</Id>
    </CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>
        <ResponseFormat Length="8" Encoding="DECIMAL"/>
      </AlgorithmParameters>
      <Data>
        <Secret>
          <PlainValue>${secretBase64}</PlainValue>
        </Secret>
        <Counter>
          <PlainValue>0</PlainValue>
        </Counter>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>
`;
}

describe("tessera CLI without a database", () => {
  it("lists its commands in npx tessera --help", async () => {
    const run = await collect(
      spawn("npx", ["--no-install", "tessera", "--help"], { cwd: repositoryRoot, env: process.env, stdio: ["ignore", "pipe", "pipe"] }),
    );
    expect(run.code).toBe(0);
    for (const command of ["serve", "migrate", "bootstrap", "users", "tokens", "applications", "audit", "keys"]) {
      expect(run.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, "m"));
    }
  });

  it("refuses an invalid configuration with a readable message and exit 1, touching nothing", async () => {
    const database = await createTestDatabase("sqlite");
    try {
      const run = await tessera(["migrate"], cliEnvironment(database, { TESSERA_HTTP_PORT: "notaport" }));
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(/^error: invalid configuration: TESSERA_HTTP_PORT: /);
      expect(run.stderr).not.toMatch(/\n\s+at /);
      expect(existsSync(path.join(database.dataDir, "tessera.db"))).toBe(false);
    } finally {
      await database.drop();
    }
  });

  it("answers a missing file and a bad number with a one-line error, not a stack trace", async () => {
    const database = await createTestDatabase("sqlite");
    try {
      const env = cliEnvironment(database);
      const { virtualServerId } = await tesseraJson<{ virtualServerId: string }>(["bootstrap", "--json"], env);
      const missing = await tessera(["users", "import", path.join(database.dataDir, "nope.csv"), "--vs", virtualServerId], env);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/^error: cannot read .*nope\.csv: ENOENT/);
      for (const args of [
        ["tokens", "list", "--vs", virtualServerId, "--limit", "abc"],
        ["users", "import", "x.csv", "--vs", virtualServerId, "--batch-size", "0"],
        ["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "-5"],
      ]) {
        const run = await tessera(args, env);
        expect(run.code).toBe(1);
        expect(run.stderr).toMatch(/is invalid\. a whole number from/);
        expect(run.stderr).not.toMatch(/\n\s+at /);
      }
    } finally {
      await database.drop();
    }
  });
});

describeEachDatabase("tessera CLI", (kind) => {
  let database: TestDatabase;
  let env: NodeJS.ProcessEnv;

  beforeEach(async () => {
    database = await createTestDatabase(kind);
    env = cliEnvironment(database);
  });

  afterEach(async () => {
    await database.drop();
  });

  const bootstrap = (extra: string[] = []) => tesseraJson<Bootstrap>(["bootstrap", ...extra], env);

  describe("migrate", () => {
    it("applies the migrations once and then reports nothing to apply", async () => {
      expect(await tesseraJson(["migrate"], env)).toEqual({ applied: ["001-initial", "002-provisioning", "003-applications", "004-challenges", "005-server-secrets", "006-guessing-limits", "007-user-search", "008-unkeyed-users", "009-challenge-redemption", "010-push-timeout", "011-audit-pending", "012-challenges-by-user", "013-ended-push-owed", "014-wake-push-owed", "015-wake-owed-devices"] });
      expect(await tesseraJson(["migrate"], env)).toEqual({ applied: [] });
    });
  });

  describe("bootstrap", () => {
    it("prints one JSON object with a password and an API key that the server then accepts", async () => {
      const result = await bootstrap(["--name", "Acme", "--email", "root@acme.test"]);
      expect(result).toMatchObject({ virtualServerName: "Acme", operatorEmail: "root@acme.test" });
      expect(result.virtualServerId).toMatch(/\S/);
      expect(result.password.length).toBeGreaterThanOrEqual(12);
      expect(result.apiKey).toMatch(/\S{20,}/);

      const server = await startServe(env);
      try {
        const me = await fetch(`${server.url}/api/v1/me`, { headers: { authorization: `Bearer ${result.apiKey}` } });
        expect(me.status).toBe(200);
        expect(await me.json()).toMatchObject({
          role: "admin",
          operatorId: result.operatorId,
          virtualServerId: result.virtualServerId,
          scopeIncludesChildren: true,
        });
        const session = await fetch(`${server.url}/api/v1/sessions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: result.operatorEmail, password: result.password }),
        });
        expect(session.status).toBe(201);
        const unknownKey = await fetch(`${server.url}/api/v1/me`, { headers: { authorization: `Bearer ${result.apiKey}x` } });
        expect(unknownKey.status).toBe(401);
      } finally {
        server.child.kill("SIGTERM");
      }
      const stopped = await server.exit;
      expect(stopped.code).toBe(0);
    });
  });

  describe("users import", () => {
    const brokenCsv = [
      "userId,firstName,lastName,email,groups",
      "alice,Alice,Archer,alice@example.com,staff;vpn",
      "bob,Bob,Baker,not-an-email,staff",
      ",Nobody,Noid,noid@example.com,staff",
      "carol,Carol,Cook,carol@example.com,",
      "alice,Alice,Again,alice.again@example.com,staff",
      "dave,Dave,Dunn,dave@example.com,vpn",
      '"eve,Eve,Evans,eve@example.com,staff',
      "",
    ].join("\n");

    it("reports each broken CSV row with its line and keeps the good rows", async () => {
      await bootstrap();
      const file = path.join(database.dataDir, "users.csv");
      writeFileSync(file, brokenCsv);

      const run = await tessera(["users", "import", file, "--vs", "Default", "--json"], env);
      expect(run.code, run.stderr).toBe(3);
      const report = singleJsonObject<UserImportReport>(run.stdout);
      expect(report.imported).toBe(3);
      expect(report.failed).toBe(4);
      // In file order (here every error is found while reading, before any write).
      const errors = report.errors;
      expect(errors).toMatchObject([
        { line: 3, userId: "bob", code: "VALIDATION_FAILED" },
        { line: 4, userId: null, code: "VALIDATION_FAILED" },
        { line: 6, userId: "alice", code: "USER_EXISTS" },
        { line: 8, userId: null, code: "CSV_INVALID" },
      ]);
      expect(errors[0]!.message).toMatch(/email/);
      expect(errors[1]!.message).toMatch(/userId/);

      const users = await query(database, "select id, user_id, email from users order by user_id");
      expect(users.map((user) => [user.user_id, user.email])).toEqual([
        ["alice", "alice@example.com"],
        ["carol", "carol@example.com"],
        ["dave", "dave@example.com"],
      ]);
      const groups = await query(
        database,
        "select u.user_id, g.group_name from user_groups g join users u on u.id = g.user_pk order by u.user_id, g.group_name",
      );
      expect(groups.map((group) => [group.user_id, group.group_name])).toEqual([
        ["alice", "staff"],
        ["alice", "vpn"],
        ["dave", "vpn"],
      ]);
    });

    it("reports users already in the virtual server as USER_EXISTS on a second run and imports nothing twice", async () => {
      await bootstrap();
      const file = path.join(database.dataDir, "users.csv");
      writeFileSync(file, "userId,email\nann,ann@example.com\nben,ben@example.com\n");
      expect(await tesseraJson(["users", "import", file, "--vs", "Default"], env)).toEqual({ imported: 2, failed: 0, errors: [] });

      writeFileSync(file, "userId,email\nann,ann@example.com\ncid,cid@example.com\n");
      const run = await tessera(["users", "import", file, "--vs", "Default", "--json"], env);
      expect(run.code).toBe(3);
      expect(singleJsonObject(run.stdout)).toMatchObject({ imported: 1, failed: 1, errors: [{ line: 2, userId: "ann", code: "USER_EXISTS" }] });
      expect(await countOf(database, "users")).toBe(3);
    });

    it("writes progress to stderr, and with --json prints only one JSON object on stdout", async () => {
      await bootstrap();
      const file = path.join(database.dataDir, "users.csv");
      writeFileSync(file, "userId,email,groups\nann,ann@example.com,a;b\nben,ben@example.com,a\n");

      const human = await tessera(["users", "import", file, "--vs", "Default"], env);
      expect(human.code).toBe(0);
      expect(human.stderr).toMatch(/^importing users: /m);
      expect(human.stdout).not.toMatch(/importing users/);
      expect(human.stdout).toMatch(/^imported 2, failed 0$/m);

      writeFileSync(file, "userId,email,groups\ncid,cid@example.com,a\n");
      const json = await tessera(["users", "import", file, "--vs", "Default", "--json"], env);
      expect(json.code).toBe(0);
      expect(json.stdout.endsWith("\n")).toBe(true);
      expect(singleJsonObject(json.stdout)).toEqual({ imported: 1, failed: 0, errors: [] });
      expect(json.stderr).not.toMatch(/importing users/);
    });
  });

  describe("tokens", () => {
    it("adds mobile tokens with distinct generated serials", async () => {
      const { virtualServerId } = await bootstrap();
      const added = await tesseraJson<{ count: number; firstSerial: string; lastSerial: string; serials: string[] }>(
        ["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "25"],
        env,
      );
      expect(added.count).toBe(25);
      expect(added.serials).toHaveLength(25);
      expect(new Set(added.serials).size).toBe(25);
      for (const serial of added.serials) expect(serial).toMatch(/^MP\d{10}$/);
      expect(added.firstSerial).toBe(added.serials[0]);
      expect(added.lastSerial).toBe(added.serials[24]);
      const stored = await query(database, "select serial, type, state from tokens where virtual_server_id = $1 order by serial", [virtualServerId]);
      expect(stored).toEqual([...added.serials].sort().map((serial) => ({ serial, type: "mobile", state: "inventory" })));
    });

    it("pages through the inventory with nextCursor, every token once", async () => {
      const { virtualServerId } = await bootstrap();
      const { serials } = await tesseraJson<{ serials: string[] }>(["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "25"], env);

      const pages: TokenPage[] = [];
      let cursor: string | null = null;
      do {
        const args: string[] = ["tokens", "list", "--vs", virtualServerId, "--state", "inventory", "--limit", "10"];
        if (cursor) args.push("--cursor", cursor);
        const page: TokenPage = await tesseraJson<TokenPage>(args, env);
        pages.push(page);
        cursor = page.nextCursor;
      } while (cursor && pages.length < 10);

      expect(pages.map((page) => page.items.length)).toEqual([10, 10, 5]);
      expect(pages.at(-1)!.nextCursor).toBeNull();
      const listed = pages.flatMap((page) => page.items.map((item) => item.serial));
      expect(listed).toEqual([...serials].sort());
      for (const item of pages.flatMap((page) => page.items)) expect(item).toMatchObject({ state: "inventory", virtualServerId });
    });

    it("shows one token as a JSON object", async () => {
      const { virtualServerId } = await bootstrap();
      const { serials } = await tesseraJson<{ serials: string[] }>(["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "1"], env);
      const token = await tesseraJson<TokenView>(["tokens", "show", serials[0]!], env);
      expect(token).toMatchObject({ serial: serials[0], type: "mobile", state: "inventory", virtualServerId, user: null, hasKey: false });
      expect(token.otp.mode).toBe("totp");
    });

    it("refuses a serial with a wrong check digit with SERIAL_INVALID and exit 1", async () => {
      await bootstrap();
      const run = await tessera(["tokens", "show", "MP0000000012", "--json"], env);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr.startsWith("error SERIAL_INVALID")).toBe(true);
      expect(run.stderr).toMatch(/MP0000000012/);
    });

    it("imports hardware tokens from a CSV seed file with hex and base32 seeds", async () => {
      const { virtualServerId } = await bootstrap();
      const file = path.join(database.dataDir, "seeds.csv");
      writeFileSync(file, seedCsvFile(`HW-0001,${SECRET_HEX},totp,6,30`, `HW-0002,${SECRET_BASE32},hotp,8,`));

      expect(await tesseraJson(["tokens", "import", file, "--vs", virtualServerId], env)).toEqual({ count: 2, serials: ["HW-0001", "HW-0002"] });

      const totp = await tesseraJson<TokenView>(["tokens", "show", "HW-0001"], env);
      expect(totp).toMatchObject({ type: "hardware", state: "inventory", hasKey: true, otp: { mode: "totp", digits: 6, periodSeconds: 30, algorithm: "SHA1" } });
      const hotp = await tesseraJson<TokenView>(["tokens", "show", "HW-0002"], env);
      expect(hotp).toMatchObject({ type: "hardware", hasKey: true, otp: { mode: "hotp", digits: 8 } });

      // Both encodings carry the same secret, stored encrypted under the master key.
      const keyring = createKeyring([parseMasterKey(masterKeyHex)]);
      const stored = await query(database, "select serial, key_ciphertext, key_id from tokens where type = 'hardware' order by serial");
      expect(stored).toHaveLength(2);
      for (const row of stored) {
        expect(row.key_ciphertext).not.toContain(SECRET_HEX);
        expect(keyring.decrypt(String(row.key_ciphertext), String(row.key_id), String(row.serial))).toEqual(SECRET);
      }
    });

    it("imports a hardware token from a plain RFC 6030 PSKC file", async () => {
      const { virtualServerId } = await bootstrap();
      const file = path.join(database.dataDir, "tokens.pskc.xml");
      writeFileSync(file, plainPskc("987654321", SECRET_BASE64));

      expect(await tesseraJson(["tokens", "import", file, "--vs", virtualServerId], env)).toEqual({ count: 1, serials: ["987654321"] });
      const token = await tesseraJson<TokenView>(["tokens", "show", "987654321"], env);
      expect(token).toMatchObject({ type: "hardware", state: "inventory", virtualServerId, hasKey: true, otp: { mode: "hotp", digits: 8, algorithm: "SHA1" } });

      const [row] = await query(database, "select key_ciphertext, key_id, hotp_counter from tokens where serial = '987654321'");
      expect(Number(row!.hotp_counter)).toBe(0);
      const keyring = createKeyring([parseMasterKey(masterKeyHex)]);
      expect(keyring.decrypt(String(row!.key_ciphertext), String(row!.key_id), "987654321")).toEqual(SECRET);
    });

    it("imports nothing from a seed file with one broken row and exits 1 with SEED_FILE_INVALID", async () => {
      const { virtualServerId } = await bootstrap();
      const file = path.join(database.dataDir, "seeds.csv");
      writeFileSync(file, seedCsvFile(`HW-B1,${SECRET_HEX},totp,6,30`, "HW-B2,not a seed!,totp,6,30", `HW-B3,${SECRET_BASE32},totp,6,30`));

      const run = await tessera(["tokens", "import", file, "--vs", virtualServerId, "--json"], env);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr.startsWith("error SEED_FILE_INVALID")).toBe(true);
      expect(run.stderr).toMatch(/line 3/);

      const page = await tesseraJson<TokenPage>(["tokens", "list", "--vs", virtualServerId], env);
      expect(page.items.map((item) => item.serial)).toEqual([]);
      expect(await countOf(database, "tokens")).toBe(0);
      expect(await query(database, "select seq from audit_log where action = 'token.import'")).toEqual([]);
    });
  });

  describe("audit verify", () => {
    it("reports an intact chain with the number of records", async () => {
      const { virtualServerId } = await bootstrap();
      await tesseraJson(["tokens", "add", "--vs", virtualServerId, "--type", "email", "--count", "3"], env);
      const records = await countOf(database, "audit_log");
      expect(records).toBeGreaterThan(1);

      const verdict = await tesseraJson<ChainVerdict>(["audit", "verify"], env);
      expect(verdict).toMatchObject({ ok: true, records });
    });

    it("finds a record changed behind the triggers' back, names its seq and exits 4", async () => {
      const { virtualServerId } = await bootstrap();
      await tesseraJson(["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "2"], env);
      const records = await countOf(database, "audit_log");
      expect(records).toBeGreaterThanOrEqual(3);
      const tampered = 2;

      if (database.target.kind === "sqlite") {
        const db = new SQLite(database.target.file);
        try {
          db.exec("drop trigger audit_log_no_update");
          db.prepare("update audit_log set reason = 'nothing to see here' where seq = ?").run(tampered);
        } finally {
          db.close();
        }
      } else {
        const client = new pg.Client({ connectionString: database.target.url });
        await client.connect();
        try {
          await client.query("drop trigger audit_log_no_update on audit_log");
          await client.query("update audit_log set reason = 'nothing to see here' where seq = $1", [tampered]);
        } finally {
          await client.end();
        }
      }

      const run = await tessera(["audit", "verify", "--json"], env);
      expect(run.code).toBe(4);
      expect(singleJsonObject(run.stdout)).toMatchObject({ ok: false, brokenAtSeq: tampered, records: tampered - 1 });

      const human = await tessera(["audit", "verify"], env);
      expect(human.code).toBe(4);
      expect(human.stdout).toMatch(new RegExp(`broken at record ${tampered}\\b`));
    });
  });

  describe("keys rotate", () => {
    /** The services over this database with the keys of the key file, as a server would open them. */
    async function withKeyFileServices<T>(keyFile: string, use: (services: Services) => Promise<T>): Promise<T> {
      const keys = (JSON.parse(readFileSync(keyFile, "utf8")) as { keys: Array<{ key: string }> }).keys;
      const storage = openStorage(database.target);
      try {
        return await use(createServices(storage, createKeyring(keys.map((key) => parseMasterKey(key.key)))));
      } finally {
        await storage.close();
      }
    }

    it("re-encrypts every sealed secret (token keys, RADIUS secrets) under a new key file key and keeps the file private", async () => {
      // Without TESSERA_MASTER_KEY the key lives in master.keys in the data directory.
      env = cliEnvironment(database, { TESSERA_MASTER_KEY: undefined });
      const keyFile = path.join(database.dataDir, "master.keys");
      const { virtualServerId } = await bootstrap();
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);

      const file = path.join(database.dataDir, "seeds.csv");
      writeFileSync(file, seedCsvFile(`HW-K1,${SECRET_HEX},totp,6,30`, `HW-K2,${SECRET_BASE32},hotp,6,`, `HW-K3,${SECRET_HEX},totp,8,60`));
      await tesseraJson(["tokens", "import", file, "--vs", virtualServerId], env);
      await tesseraJson(["tokens", "add", "--vs", virtualServerId, "--type", "mobile", "--count", "2"], env);
      const before = await query(database, "select distinct key_id from tokens where key_id is not null");
      expect(before).toHaveLength(1);
      const oldKeyId = String(before[0]!.key_id);
      // A RADIUS client's shared secret, sealed under the same key: pruning the old key
      // must not take it with it.
      const radiusSecret = "radius-secret-before-rotation";
      const radiusAppId = await withKeyFileServices(keyFile, async (services) =>
        (await services.applications.create(installerPrincipal, { virtualServerId, name: "vpn", kind: "radius", radiusAddresses: ["10.0.0.0/8"], radiusSecret })).id,
      );

      const rotated = await tesseraJson<{ reencrypted: number; byKind: Record<string, number>; keyId: string }>(["keys", "rotate"], env);
      expect(rotated.reencrypted).toBe(4);
      expect(rotated.byKind).toEqual({ tokens: 3, radiusSecrets: 1, queuedMail: 0, serverSecrets: 0 });
      expect(rotated.keyId).toMatch(/^[0-9a-f]{16}$/);
      expect(rotated.keyId).not.toBe(oldKeyId);

      const keyed = await query(database, "select serial, key_id, key_ciphertext from tokens where key_ciphertext is not null order by serial");
      expect(keyed.map((row) => [row.serial, row.key_id])).toEqual([
        ["HW-K1", rotated.keyId],
        ["HW-K2", rotated.keyId],
        ["HW-K3", rotated.keyId],
      ]);
      expect(await query(database, "select serial from tokens where key_id is not null and key_id <> $1", [rotated.keyId])).toEqual([]);

      // The old key stays for decryption (a running server may still seal with it) until
      // `keys prune`, which keeps only keys that tokens still use; the file stays private.
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      const pruned = await tesseraJson<{ removed: string[] }>(["keys", "prune"], env);
      expect(pruned.removed).toEqual([oldKeyId]);
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      const keys = (JSON.parse(readFileSync(keyFile, "utf8")) as { keys: Array<{ id: string; key: string }> }).keys;
      expect(keys.map((key) => key.id)).toEqual([rotated.keyId]);
      const keyring = createKeyring(keys.map((key) => parseMasterKey(key.key)));
      for (const row of keyed) expect(keyring.decrypt(String(row.key_ciphertext), String(row.key_id), String(row.serial))).toEqual(SECRET);

      for (const serial of ["HW-K1", "HW-K2", "HW-K3"]) {
        expect(await tesseraJson<TokenView>(["tokens", "show", serial], env)).toMatchObject({ serial, hasKey: true });
      }
      const radiusSecretAfter = await withKeyFileServices(keyFile, async (services) => {
        const row = await services.storage.db.selectFrom("applications").selectAll().where("id", "=", radiusAppId).executeTakeFirstOrThrow();
        expect(row.radius_secret_key_id).toBe(rotated.keyId);
        return services.applications.radiusSecretOf(row).toString("utf8");
      });
      expect(radiusSecretAfter).toBe(radiusSecret);
      expect(await tesseraJson<ChainVerdict>(["audit", "verify"], env)).toMatchObject({ ok: true });
    });
  });
});

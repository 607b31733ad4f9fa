import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import SQLite from "better-sqlite3";
import pg from "pg";
import { afterEach, expect, it } from "vitest";
import { bin, cliEnvironment, collect, type CliRun } from "../testing/cli.js";
import { createTestDatabase, describeEachDatabase, type TestDatabase } from "../testing/databases.js";

/**
 * A user import killed with SIGKILL in the middle, as by the OOM killer or a pulled
 * plug: what was committed must be whole batches, each with its audit record and every
 * user's groups, and running the import again must finish the job.
 */

const BATCH_SIZE = 1000;
const GROUPS_PER_USER = 2;

function startTessera(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; exit: Promise<CliRun> } {
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  return { child, exit: collect(child) };
}

const tessera = (args: string[], env: NodeJS.ProcessEnv) => startTessera(args, env).exit;

function userIdOf(row: number): string {
  return `user${String(row).padStart(8, "0")}`;
}

/** `rows` users, each in exactly GROUPS_PER_USER groups, written in chunks to bound memory. */
async function writeUsersCsv(file: string, rows: number): Promise<void> {
  const out = createWriteStream(file);
  const finished = new Promise<void>((resolve, reject) => {
    out.once("finish", resolve);
    out.once("error", reject);
  });
  out.write("userId,firstName,lastName,email,groups\n");
  for (let start = 0; start < rows; start += 10_000) {
    let chunk = "";
    for (let row = start; row < Math.min(rows, start + 10_000); row += 1) {
      const userId = userIdOf(row);
      chunk += `${userId},First ${row},Last ${row},${userId}@example.com,team-${row % 97};site-${row % 13}\n`;
    }
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
  }
  out.end();
  await finished;
}

type Row = Record<string, unknown>;

/** A connection of the test's own to the database the CLI writes. */
interface Inspector {
  all(text: string): Promise<Row[]>;
  close(): Promise<void>;
}

async function inspect(database: TestDatabase, options: { readonly: boolean }): Promise<Inspector> {
  if (database.target.kind === "sqlite") {
    const db = new SQLite(database.target.file, { readonly: options.readonly, fileMustExist: true });
    return { all: async (text) => db.prepare(text).all() as Row[], close: async () => void db.close() };
  }
  const client = new pg.Client({ connectionString: database.target.url });
  await client.connect();
  if (options.readonly) await client.query("set default_transaction_read_only = on");
  return { all: async (text) => (await client.query(text)).rows as Row[], close: () => client.end() };
}

async function count(inspector: Inspector, text: string): Promise<number> {
  const [row] = await inspector.all(text);
  return Number(Object.values(row!)[0]);
}

interface KilledImport {
  database: TestDatabase;
  file: string;
  rows: number;
}

/**
 * Starts the import and SIGKILLs it as soon as a first batch is visible to another
 * connection. A machine fast enough to finish the file first gets a larger file.
 */
async function importKilledMidway(kind: TestDatabase["kind"], track: (database: TestDatabase) => void): Promise<KilledImport> {
  for (let rows = 300_000; rows <= 2_400_000; rows *= 2) {
    const database = await createTestDatabase(kind);
    track(database);
    const env = cliEnvironment(database);
    const bootstrap = await tessera(["bootstrap", "--json"], env);
    expect(bootstrap.code, bootstrap.stderr).toBe(0);
    const file = path.join(database.dataDir, "users.csv");
    await writeUsersCsv(file, rows);

    const poller = await inspect(database, { readonly: true });
    const { child, exit } = startTessera(["users", "import", file, "--vs", "Default", "--batch-size", String(BATCH_SIZE)], env);
    let exited = false;
    void exit.then(() => (exited = true));
    try {
      while (!exited && (await count(poller, "select count(*) from users")) === 0) await sleep(20);
      child.kill("SIGKILL");
    } finally {
      await poller.close();
    }
    const run = await exit;
    if (run.signal === "SIGKILL") return { database, file, rows };
    // The import finished (or failed) before the kill landed: it must at least have succeeded.
    expect(run.code, run.stderr).toBe(0);
  }
  throw new Error("the import always finished before it could be killed, even with 2,400,000 rows");
}

describeEachDatabase("users import killed with SIGKILL", (kind) => {
  const databases: TestDatabase[] = [];

  afterEach(async () => {
    for (const database of databases.splice(0)) await database.drop();
  });

  it(
    "leaves whole audited batches with every user's groups, and a second run imports the rest",
    async () => {
      const { database, file, rows } = await importKilledMidway(kind, (database) => databases.push(database));
      const env = cliEnvironment(database);

      const db = await inspect(database, { readonly: false });
      let committed: number;
      try {
        if (kind === "sqlite") expect(await db.all("pragma integrity_check")).toEqual([{ integrity_check: "ok" }]);
        committed = await count(db, "select count(*) from users");
        expect(committed).toBeGreaterThan(0);
        expect(committed).toBeLessThan(rows);
        expect(committed % BATCH_SIZE).toBe(0);

        // Users committed == users audited: each batch landed with its audit record. On
        // PostgreSQL the last records may still wait to be linked into the chain.
        const audits = await db.all("select details from audit_log where action = 'user.import' union all select details from audit_pending where action = 'user.import'");
        const audited = audits.reduce((sum, audit) => sum + (JSON.parse(String(audit.details)) as { count: number }).count, 0);
        expect(audited).toBe(committed);
        expect(audits.length).toBe(committed / BATCH_SIZE);

        // No user without the groups its row gave it, no group without its user.
        expect(await count(db, "select count(*) from user_groups")).toBe(GROUPS_PER_USER * committed);
        expect(
          await count(
            db,
            `select count(*) from users u where (select count(*) from user_groups g where g.user_pk = u.id) <> ${GROUPS_PER_USER}`,
          ),
        ).toBe(0);
        expect(await count(db, "select count(*) from user_groups g where not exists (select 1 from users u where u.id = g.user_pk)")).toBe(0);
        // Batches are committed in file order: the first rows are the ones kept.
        const [last] = await db.all("select max(user_id) as last_user_id from users");
        expect(last!.last_user_id).toBe(userIdOf(committed - 1));
      } finally {
        await db.close();
      }

      const verify = await tessera(["audit", "verify", "--json"], env);
      expect(verify.code, verify.stderr).toBe(0);
      expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true });
      // The next process linked what the killed one left waiting.
      const linked = await inspect(database, { readonly: true });
      try {
        expect(await count(linked, "select count(*) from audit_pending")).toBe(0);
        expect(await count(linked, "select count(*) from audit_log where action = 'user.import'")).toBe(committed / BATCH_SIZE);
      } finally {
        await linked.close();
      }

      const rerun = await tessera(["users", "import", file, "--vs", "Default", "--batch-size", String(BATCH_SIZE), "--json"], env);
      expect(rerun.code, rerun.stderr).toBe(3);
      const report = JSON.parse(rerun.stdout) as { imported: number; failed: number; errors: Array<{ line: number; userId: string; code: string }> };
      expect(report.failed).toBe(committed);
      expect(report.imported).toBe(rows - committed);
      expect(report.errors.length).toBe(Math.min(committed, 1000));
      for (const error of report.errors) {
        expect(error).toMatchObject({ code: "USER_EXISTS", userId: userIdOf(error.line - 2) });
      }

      const after = await inspect(database, { readonly: true });
      try {
        expect(await count(after, "select count(*) from users")).toBe(rows);
        expect(await count(after, "select count(*) from user_groups")).toBe(GROUPS_PER_USER * rows);
      } finally {
        await after.close();
      }
      const reverify = await tessera(["audit", "verify", "--json"], env);
      expect(reverify.code, reverify.stderr).toBe(0);
      expect(JSON.parse(reverify.stdout)).toMatchObject({ ok: true });
    },
    600_000,
  );
});

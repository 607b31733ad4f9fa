import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { sql, type Kysely, type KyselyConfig } from "kysely";
import pg from "pg";
import { describe } from "vitest";
import { fixedClock, type Clock } from "../clock.js";
import { createServices, type ServiceOptions, type Services } from "../core.js";
import { createKeyring } from "../crypto/keyring.js";
import { openStorage, type DatabaseKind, type DatabaseTarget, type Storage } from "../storage/database.js";
import { migrateToLatest } from "../storage/migrate.js";

/**
 * Test databases: a SQLite file in a fresh temporary directory, or a PostgreSQL
 * database created for the test file and dropped afterwards. PostgreSQL is reached at
 * TESSERA_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres); when it is
 * not there the PostgreSQL suites fail, they are never skipped.
 */
export const adminPgUrl = process.env.TESSERA_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export const databaseKinds: DatabaseKind[] = ["sqlite", "postgres"];

export interface TestDatabase {
  kind: DatabaseKind;
  target: DatabaseTarget;
  /** Environment variables that point a child process (the CLI) at this database. */
  env: Record<string, string>;
  dataDir: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "tessera-test-"));
  if (kind === "sqlite") {
    const file = path.join(dataDir, "tessera.db");
    return {
      kind,
      target: { kind, file },
      env: { TESSERA_DATA_DIR: dataDir },
      dataDir,
      drop: async () => rmSync(dataDir, { recursive: true, force: true }),
    };
  }
  const name = `tessera_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminPgUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminPgUrl, name);
  return {
    kind,
    target: { kind, url },
    env: { TESSERA_DATA_DIR: dataDir, DATABASE_URL: url },
    dataDir,
    async drop() {
      const client = new pg.Client({ connectionString: adminPgUrl });
      await client.connect();
      try {
        // pg's pool.end() returns before the server has closed its connections; forcing
        // the drop then would kill them mid-goodbye and surface as errors in the test.
        // Wait for them to go, and force only what is left after a few seconds.
        for (let attempt = 0; ; attempt++) {
          try {
            await client.query(`drop database if exists ${name}${attempt >= 100 ? " with (force)" : ""}`);
            break;
          } catch (error) {
            if ((error as { code?: string }).code !== "55006" || attempt >= 100) throw error;
            await new Promise((resolve) => setTimeout(resolve, 30));
          }
        }
      } finally {
        await client.end();
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const testMasterKey = Buffer.alloc(32, 7);

export interface TestCore {
  database: TestDatabase;
  storage: Storage;
  services: Services;
  clock: Clock & { advance(ms: number): void };
  close(): Promise<void>;
}

/** A migrated database of the given kind with services over it and a clock the test moves. */
export async function createTestCore(
  kind: DatabaseKind,
  options: Pick<ServiceOptions, "webPush" | "onWebPushFailure"> & { /** Told of every statement the core runs. */ log?: KyselyConfig["log"] } = {},
): Promise<TestCore> {
  const database = await createTestDatabase(kind);
  const { log, ...serviceOptions } = options;
  const storage = openStorage(database.target, { log });
  await migrateToLatest(storage);
  const clock = fixedClock(Date.parse("2026-01-01T00:00:00Z"));
  const services = createServices(storage, createKeyring([testMasterKey]), { clock, publicUrl: "http://tessera.test", ...serviceOptions });
  return {
    database,
    storage,
    services,
    clock,
    async close() {
      await storage.close();
      await database.drop();
    },
  };
}

/**
 * A second node over the test core's database: its own storage (connections, and on
 * SQLite its own group commit), services and the same keyring and clock. On
 * PostgreSQL its pool and the first node's are connected beforehand (eight each), so
 * that requests started together run together rather than one by one as pools connect.
 */
export async function openSecondNode(core: TestCore): Promise<{ services: Services; close(): Promise<void> }> {
  const storage = openStorage(core.database.target);
  if (storage.kind === "postgres") {
    const busy = sql`select pg_sleep(0.05)`;
    await Promise.all([core.storage.db, storage.db].flatMap((db) => Array.from({ length: 8 }, () => busy.execute(db))));
  }
  return { services: createServices(storage, core.services.keyring, { clock: core.clock }), close: () => storage.close() };
}

/** Runs the same suite on SQLite and on PostgreSQL. */
export function describeEachDatabase(name: string, suite: (kind: DatabaseKind) => void): void {
  for (const kind of databaseKinds) describe(`${name} [${kind}]`, () => suite(kind));
}

/** Every table's rows, counted and digested, to show nothing changed. */
export async function snapshotTables(db: Kysely<unknown>): Promise<Record<string, { rows: number; sha256: string }>> {
  const snapshot: Record<string, { rows: number; sha256: string }> = {};
  for (const { name } of await db.introspection.getTables()) {
    const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(db);
    const lines = rows.map((row) => JSON.stringify(row)).sort();
    snapshot[name] = { rows: rows.length, sha256: createHash("sha256").update(lines.join("\n")).digest("hex") };
  }
  return snapshot;
}

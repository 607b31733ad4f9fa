import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { Worker } from "node:worker_threads";
import SQLite from "better-sqlite3";
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type KyselyConfig,
  type Driver,
  type SqliteDatabase,
  type SqliteStatement,
} from "kysely";
import pg from "pg";
import type { Database } from "./schema.js";

export type DatabaseKind = "sqlite" | "postgres";

export type DatabaseTarget = { kind: "sqlite"; file: string } | { kind: "postgres"; url: string };

export interface Storage {
  db: Kysely<Database>;
  kind: DatabaseKind;
  /** Runs the hooks given to `beforeClose`, latest first, then closes the database. */
  close(): Promise<void>;
  /** Work to finish while the database is still open (the audit chain's last links). */
  beforeClose(hook: () => Promise<void>): void;
}

/** close() runs the hooks (each once, latest first, a failing one not stopping the rest) and then `closeDatabase`. */
function closing(closeDatabase: () => Promise<void>): Pick<Storage, "close" | "beforeClose"> {
  const hooks: Array<() => Promise<void>> = [];
  return {
    beforeClose: (hook) => void hooks.push(hook),
    async close() {
      for (const hook of hooks.splice(0).reverse()) await hook().catch(() => undefined);
      await closeDatabase();
    },
  };
}

// PostgreSQL's int8 arrives as a string by default; every bigint here is a time in
// milliseconds or a counter, all far below 2^53, so numbers are safe and keep one
// representation across both databases.
const pgTypes = {
  getTypeParser(oid: number, format?: string) {
    if (oid === 20) return (value: string) => Number(value);
    return format === undefined ? pg.types.getTypeParser(oid) : pg.types.getTypeParser(oid, format as "text");
  },
};

/**
 * Transactions on SQLite start with BEGIN IMMEDIATE: a deferred transaction that reads
 * and then writes fails at once with SQLITE_BUSY when another process (the CLI beside a
 * running server) holds the write lock, instead of waiting for busy_timeout.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: ConstructorParameters<typeof SqliteDialect>[0];
  constructor(config: ConstructorParameters<typeof SqliteDialect>[0]) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config);
  }
}

/**
 * Kysely prepares every statement anew; better-sqlite3 statements can be reused, and
 * the same few hundred query shapes repeat, so keep the recent ones.
 */
function withStatementCache(database: SQLite.Database, size = 512): SqliteDatabase {
  const cache = new Map<string, SQLite.Statement>();
  return {
    close: () => database.close(),
    prepare(sql: string): SqliteStatement {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql);
      } else {
        statement = database.prepare(sql);
        if (cache.size >= size) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement as unknown as SqliteStatement;
    },
  };
}

export function openSqlite(file: string): SQLite.Database {
  if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
  const database = new SQLite(file);
  database.pragma("journal_mode = WAL");
  // NORMAL in WAL mode is durable across process crashes; only an OS crash may lose
  // the last transactions, never corrupt the file.
  database.pragma("synchronous = NORMAL");
  database.pragma("busy_timeout = 10000");
  // A checkpointed WAL is reused from its start; past 64 MiB it is also cut back.
  database.pragma("journal_size_limit = 67108864");
  database.pragma("foreign_keys = ON");
  // 64 MiB of page cache instead of SQLite's 2 MiB: the pages every login reads (users,
  // tokens, the audit trail's index leaves) stay in memory on a directory of tens of
  // thousands of users. Logins used 4-13 % less CPU in benchmark runs taken in turn.
  database.pragma("cache_size = -65536");
  return database;
}

/** What the checkpoint thread runs: its own connection, a passive checkpoint every interval. */
const CHECKPOINTER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const SQLite = require(workerData.driver);
const database = new SQLite(workerData.file);
database.pragma("busy_timeout = 1000");
const timer = setInterval(() => {
  try {
    database.pragma("wal_checkpoint(PASSIVE)");
  } catch (error) {
    parentPort.postMessage(String(error));
  }
}, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  database.close();
  parentPort.close();
});
`;

export interface BackgroundCheckpoints {
  /** How often the thread checkpoints. @default 200 */
  intervalMs?: number;
  /**
   * WAL pages past which the server's connection checkpoints for itself after all. A
   * passive checkpoint that writers keep overtaking never finishes, and SQLite reuses the
   * WAL from its start only after one that did. @default 10000 (40 MiB)
   */
  backstopPages?: number;
}

/**
 * Moves SQLite's WAL checkpoints off the event loop. By default the connection that
 * commits copies the WAL back into the database every thousand pages, inside that
 * commit: under steady logins one commit in a few dozen took tens to hundreds of
 * milliseconds, and every request waiting behind it waited too. A worker thread with
 * its own connection checkpoints instead, passively (it never blocks a writer), while
 * the server's connection only appends to the WAL, up to the backstop. Should the
 * thread fail (it exits, or a checkpoint fails), the connection checkpoints for itself
 * again every thousand pages.
 */
function checkpointInBackground(database: SQLite.Database, file: string, options: BackgroundCheckpoints): () => Promise<void> {
  const worker = new Worker(CHECKPOINTER_SOURCE, {
    eval: true,
    workerData: { file, intervalMs: options.intervalMs ?? 200, driver: createRequire(import.meta.url).resolve("better-sqlite3") },
  });
  let stopping = false;
  const fallBack = () => {
    if (!stopping && database.open) database.pragma("wal_autocheckpoint = 1000");
  };
  worker.once("online", () => {
    if (!stopping && database.open) database.pragma(`wal_autocheckpoint = ${options.backstopPages ?? 10_000}`);
  });
  // The thread posts a message only when a checkpoint failed.
  worker.on("message", fallBack);
  worker.once("error", fallBack);
  worker.once("exit", fallBack);
  worker.unref();
  return async () => {
    stopping = true;
    worker.ref();
    const exited = new Promise((resolve) => worker.once("exit", resolve));
    worker.postMessage("stop");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
    await worker.terminate();
  };
}

export function openStorage(
  target: DatabaseTarget,
  options: {
    backgroundCheckpoints?: boolean | BackgroundCheckpoints;
    /** Told of every statement run, transactions' begin and commit included (Kysely's `log`). */
    log?: KyselyConfig["log"];
  } = {},
): Storage {
  if (target.kind === "sqlite") {
    const database = openSqlite(target.file);
    const db = new Kysely<Database>({
      dialect: new ImmediateSqliteDialect({ database: withStatementCache(database) }),
      log: options.log,
    });
    const background = options.backgroundCheckpoints === true ? {} : options.backgroundCheckpoints;
    const stopCheckpoints = background && target.file !== ":memory:" ? checkpointInBackground(database, target.file, background) : null;
    return {
      db,
      kind: "sqlite",
      ...closing(async () => {
        await stopCheckpoints?.();
        await db.destroy();
      }),
    };
  }
  const pool = new pg.Pool({ connectionString: target.url, max: 10, types: pgTypes });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: options.log });
  return { db, kind: "postgres", ...closing(() => db.destroy()) };
}

import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { openStorage, type Storage } from "./database.js";

describe("SQLite checkpoints in a thread of their own", () => {
  let dir = "";
  let storage: Storage | undefined;
  afterEach(async () => {
    await storage?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** 1 MB in 200 commits, about 500 WAL pages: under the 1,000 at which a connection checkpoints by itself. */
  async function write(db: Storage["db"]) {
    await sql`create table filler (id integer primary key, body text not null)`.execute(db);
    for (let i = 0; i < 200; i += 1) await sql`insert into filler (body) values (${"x".repeat(5000)})`.execute(db);
  }

  it("copies the WAL into the database without the writing connection doing it, and stops cleanly", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "tessera-checkpoints-"));
    const file = path.join(dir, "tessera.db");
    storage = openStorage({ kind: "sqlite", file }, { backgroundCheckpoints: true });
    await expect.poll(async () => (await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(storage!.db)).rows[0]?.wal_autocheckpoint).toBe(10_000);
    await write(storage.db);
    // The pages reach the database file itself: only the checkpoint thread writes there.
    await expect.poll(() => statSync(file).size, { timeout: 5000 }).toBeGreaterThan(900_000);
    await storage.close();
    storage = undefined;
  });

  it("keeps the WAL bounded under steady writes: past the backstop the connection checkpoints for itself", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "tessera-checkpoints-"));
    const file = path.join(dir, "tessera.db");
    // A thread that seldom runs, and a low backstop, so the backstop is what bounds the WAL here.
    storage = openStorage({ kind: "sqlite", file }, { backgroundCheckpoints: { intervalMs: 60_000, backstopPages: 100 } });
    await expect.poll(async () => (await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(storage!.db)).rows[0]?.wal_autocheckpoint).toBe(100);
    await sql`create table filler (id integer primary key, body text not null)`.execute(storage.db);
    // About 5 MB in 1,000 commits, 2,500 WAL pages or so.
    for (let i = 0; i < 1000; i += 1) await sql`insert into filler (body) values (${"y".repeat(5000)})`.execute(storage.db);
    expect(statSync(`${file}-wal`).size).toBeLessThan(2 * 1024 * 1024);
    expect(statSync(file).size).toBeGreaterThan(3 * 1024 * 1024);
  });

  it("leaves checkpoints to the connection without the thread (the CLI, tests)", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "tessera-checkpoints-"));
    const file = path.join(dir, "tessera.db");
    storage = openStorage({ kind: "sqlite", file });
    expect((await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(storage.db)).rows[0]?.wal_autocheckpoint).toBe(1000);
    await write(storage.db);
    await new Promise((resolve) => setTimeout(resolve, 600));
    // Below the automatic threshold nothing has been checkpointed yet.
    expect(statSync(file).size).toBeLessThan(100_000);
  });
});

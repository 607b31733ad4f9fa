import type { Kysely, Transaction } from "kysely";
import type { Database } from "./schema.js";

/**
 * Group commit: work that arrives at the same moment shares one transaction. A commit
 * is the dearest step of a short write (on SQLite it appends every page the transaction
 * touched to the WAL and, every thousand pages, checkpoints; on PostgreSQL it waits for
 * the WAL flush), and logins that arrive together touch the same audit and index pages,
 * so one commit for many of them writes far less than one each.
 *
 * Each piece of work runs alone, one after the other, inside the shared transaction, so
 * it sees the effects of the ones before it exactly as if they had committed first. Its
 * promise settles only after the commit: nothing is reported done before it is durable.
 * When a piece fails, the batch is rolled back whole and each piece runs again in a
 * transaction of its own, so one piece's failure is its own. Work must therefore have no
 * effect outside the transaction (compute, read and write the database; act on the
 * result after the promise settles), or undo it when the transaction rolls back: what
 * it gives `scope.onRollback` runs, latest first, when its transaction is rolled back.
 * When every piece ran and the commit itself failed, nothing runs again and nothing is
 * undone: the commit may have landed (a connection lost during COMMIT), and running an
 * accepted login again would call its passcode replayed. Each piece then fails with the
 * commit's error.
 *
 * Without load nothing waits: a batch starts at the end of the current turn of the event
 * loop, with whatever arrived in that turn, and work that arrives while a batch runs
 * forms the next one.
 */
export interface WriteBatcher {
  run<T>(work: (trx: Transaction<Database>, scope: WriteScope) => Promise<T>): Promise<T>;
}

/** What a piece of work may ask of the transaction it runs in. */
export interface WriteScope {
  /** `undo` runs if this transaction is rolled back (not when its commit fails). */
  onRollback(undo: () => void): void;
}

/**
 * A scope whose undos run, latest first, when `rolledBack()` is called. An undo that
 * throws does not keep the others from running, nor the batch from going on.
 */
function rollbackScope(): WriteScope & { rolledBack(): void } {
  const undos: Array<() => void> = [];
  return {
    onRollback: (undo) => void undos.push(undo),
    rolledBack() {
      for (const undo of undos.splice(0).reverse()) {
        try {
          undo();
        } catch {
          // Undos are bookkeeping in memory; the writes they stand beside are already gone.
        }
      }
    },
  };
}

interface Pending {
  work: (trx: Transaction<Database>, scope: WriteScope) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
}

/** No grouping: each piece in a transaction of its own, all at once (PostgreSQL's connection pool runs them side by side). */
export function separateTransactions(db: Kysely<Database>): WriteBatcher {
  return {
    async run(work) {
      const scope = rollbackScope();
      let ran = false;
      try {
        return await db.transaction().execute(async (trx) => {
          const result = await work(trx, scope);
          ran = true;
          return result;
        });
      } catch (error) {
        if (!ran) scope.rolledBack();
        throw error;
      }
    },
  };
}

/** A node's group commit: batches on SQLite, a transaction each on PostgreSQL (see `separateTransactions`). */
export function writeBatcherFor(kind: "sqlite" | "postgres", db: Kysely<Database>): WriteBatcher {
  return kind === "postgres" ? separateTransactions(db) : createWriteBatcher(db);
}

/** Large enough to absorb a burst, small enough that one batch does not hold the writer long. */
const MAX_BATCH = 128;

export function createWriteBatcher(db: Kysely<Database>, options: { maxBatch?: number } = {}): WriteBatcher {
  const maxBatch = options.maxBatch ?? MAX_BATCH;
  let queue: Pending[] = [];
  let scheduled = false;

  async function runAlone(item: Pending): Promise<void> {
    const scope = rollbackScope();
    let ran = false;
    try {
      item.resolve(
        await db.transaction().execute(async (trx) => {
          const result = await item.work(trx, scope);
          ran = true;
          return result;
        }),
      );
    } catch (error) {
      if (!ran) scope.rolledBack();
      item.reject(error);
    }
  }

  async function drain(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.slice(0, maxBatch);
      queue = queue.slice(batch.length);
      if (batch.length === 1) {
        await runAlone(batch[0]!);
        continue;
      }
      let results: unknown[];
      let allRan = false;
      const scope = rollbackScope();
      try {
        results = await db.transaction().execute(async (trx) => {
          const out: unknown[] = [];
          for (const item of batch) out.push(await item.work(trx, scope));
          allRan = true;
          return out;
        });
      } catch (error) {
        if (allRan) {
          batch.forEach((item) => item.reject(error));
        } else {
          scope.rolledBack();
          for (const item of batch) await runAlone(item);
        }
        continue;
      }
      batch.forEach((item, index) => item.resolve(results[index]));
    }
    scheduled = false;
  }

  return {
    run<T>(work: (trx: Transaction<Database>, scope: WriteScope) => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({ work, resolve: resolve as (value: unknown) => void, reject });
        if (!scheduled) {
          scheduled = true;
          // setImmediate, not a microtask: requests whose bytes arrived in this turn of
          // the event loop are parsed first and join the batch.
          setImmediate(() => void drain());
        }
      });
    },
  };
}

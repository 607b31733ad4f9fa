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
 * result after the promise settles). When every piece ran and the commit itself failed,
 * nothing runs again: the commit may have landed (a connection lost during COMMIT), and
 * running an accepted login again would call its passcode replayed. Each piece then
 * fails with the commit's error.
 *
 * Without load nothing waits: a batch starts at the end of the current turn of the event
 * loop, with whatever arrived in that turn, and work that arrives while a batch runs
 * forms the next one.
 */
export interface WriteBatcher {
  run<T>(work: (trx: Transaction<Database>) => Promise<T>): Promise<T>;
}

interface Pending {
  work: (trx: Transaction<Database>) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
}

/** No grouping: each piece in a transaction of its own, all at once (PostgreSQL's connection pool runs them side by side). */
export function separateTransactions(db: Kysely<Database>): WriteBatcher {
  return { run: (work) => db.transaction().execute(work) };
}

/** Large enough to absorb a burst, small enough that one batch does not hold the writer long. */
const MAX_BATCH = 128;

export function createWriteBatcher(db: Kysely<Database>, options: { maxBatch?: number } = {}): WriteBatcher {
  const maxBatch = options.maxBatch ?? MAX_BATCH;
  let queue: Pending[] = [];
  let scheduled = false;

  async function runAlone(item: Pending): Promise<void> {
    try {
      item.resolve(await db.transaction().execute((trx) => item.work(trx)));
    } catch (error) {
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
      try {
        results = await db.transaction().execute(async (trx) => {
          const out: unknown[] = [];
          for (const item of batch) out.push(await item.work(trx));
          allRan = true;
          return out;
        });
      } catch (error) {
        if (allRan) batch.forEach((item) => item.reject(error));
        else for (const item of batch) await runAlone(item);
        continue;
      }
      batch.forEach((item, index) => item.resolve(results[index]));
    }
    scheduled = false;
  }

  return {
    run<T>(work: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
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

import { hash } from "node:crypto";
import { sql, type CompiledQuery, type DeleteQueryBuilder, type DeleteResult, type Insertable, type Kysely, type QueryCreator, type Selectable, type Transaction, type UpdateQueryBuilder, type UpdateResult } from "kysely";
import type { Clock } from "../../clock.js";
import { fail } from "../../errors.js";
import type { DatabaseKind } from "../../storage/database.js";
import { prepareInsert, prepareQuery } from "../../storage/prepared.js";
import type { AuditPendingTable, AuditRow, Database } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";

/** One thing that happened: who did it is added from the principal. */
export interface AuditEntry {
  action: string;
  virtualServerId?: string | null;
  targetType: "virtual_server" | "operator" | "user" | "token" | "policy" | "api_key" | "keyring";
  targetId?: string | null;
  tokenSerial?: string | null;
  userPk?: string | null;
  fromState?: string | null;
  toState?: string | null;
  reason?: string | null;
  details?: Record<string, unknown> | null;
}

export const GENESIS_HASH = "0".repeat(64);

type AuditFields = Omit<AuditRow, "hash" | "prev_hash">;

/**
 * The hash covers every field but the hash itself, in a fixed order, and the previous
 * record's hash: changing, removing or reordering any record breaks every later link.
 */
export function hashAuditRecord(prevHash: string, record: AuditFields): string {
  const canonical = JSON.stringify([
    record.seq,
    record.at,
    record.actor,
    record.operator_id,
    record.action,
    record.virtual_server_id,
    record.target_type,
    record.target_id,
    record.token_serial,
    record.user_pk,
    record.from_state,
    record.to_state,
    record.reason,
    record.details,
  ]);
  // One call (crypto.hash): every login appends a record, and a Hash object per record
  // cost more than the hashing.
  return hash("sha256", `${prevHash}\n${canonical}`, "hex");
}

export interface AuditLog {
  /** Appends entries inside the caller's transaction, so they land with the change or not at all. */
  append(trx: Transaction<Database>, principal: Principal, entries: AuditEntry[]): Promise<void>;
  /**
   * Links into the chain every record committed before this call. Records are linked
   * when they are written on SQLite, and within moments of their commit on PostgreSQL;
   * a reader that must see the latest records (the audit API, `audit verify`) calls
   * this first.
   */
  settle(): Promise<void>;
  /** Links what is left and stops linking in the background. */
  close(): Promise<void>;
  /**
   * Records were written to `audit_pending` by a statement of the caller's own
   * (`prepareAuditedUpdate`, PostgreSQL): link them soon, as if appended here.
   */
  written(): void;
}

/** What a pass that linked records after their commit did: how many it linked, or why it failed. */
export type LinkPassOutcome = { linked: number } | { failed: unknown };

/**
 * Where the chain is extended: SQLite in the writing transaction, PostgreSQL shortly
 * after it. `onLinkPass` hears of every PostgreSQL pass that linked records or failed.
 */
export function createAuditLog(deps: { db: Kysely<Database>; kind: DatabaseKind; clock: Clock; onLinkPass?: (outcome: LinkPassOutcome) => void }): AuditLog {
  return deps.kind === "postgres" ? linkedAfterCommit(deps) : linkedInTransaction(deps);
}

/** A record's fields as written, before it is linked: what `audit_pending` holds. */
export type PendingAuditFields = Omit<AuditFields, "seq">;

export function auditFields(principal: Principal, entry: AuditEntry, at: number): PendingAuditFields {
  return {
    at,
    actor: principal.actor,
    operator_id: principal.operatorId,
    action: entry.action,
    virtual_server_id: entry.virtualServerId ?? null,
    target_type: entry.targetType,
    target_id: entry.targetId ?? null,
    token_serial: entry.tokenSerial ?? null,
    user_pk: entry.userPk ?? null,
    from_state: entry.fromState ?? null,
    to_state: entry.toState ?? null,
    reason: entry.reason ?? null,
    details: entry.details ? JSON.stringify(entry.details) : null,
  };
}

/** Links records after `end`, in the order given: the rows to insert, and the new end. */
function link(end: { seq: number; hash: string }, records: PendingAuditFields[]): { rows: AuditRow[]; end: { seq: number; hash: string } } {
  let { seq, hash: prevHash } = end;
  const rows: AuditRow[] = [];
  for (const fields of records) {
    seq += 1;
    // One object a row (every login appends one): the hash reads only the record's fields.
    const row: AuditRow = { seq, ...fields, prev_hash: prevHash, hash: "" };
    row.hash = hashAuditRecord(prevHash, row);
    rows.push(row);
    prevHash = row.hash;
  }
  return { rows, end: { seq, hash: prevHash } };
}

/** Inserts rows of `columns` columns in statements under both databases' parameter limits. */
async function insertInChunks<Table extends "audit_log" | "audit_pending">(trx: Transaction<Database>, table: Table, rows: Insertable<Database[Table]>[], columns: number): Promise<void> {
  const size = Math.floor(8000 / columns);
  for (let start = 0; start < rows.length; start += size) {
    await trx.insertInto(table).values(rows.slice(start, start + size) as never).execute();
  }
}

/**
 * SQLite: a transaction begins IMMEDIATE and so holds the only write lock; the chain is
 * extended right in it, which costs nothing the database does not already pay.
 */
function linkedInTransaction(deps: { clock: Clock }): AuditLog {
  // Every login appends one record: its two statements are compiled once (on first use,
  // from the first transaction, which has the dialect) instead of at every append.
  let prepared: { tail: ReturnType<typeof prepareTail>; insertOne: ReturnType<typeof prepareInsertOne> } | undefined;
  // The chain's end as this transaction sees it. The transaction holds the write lock
  // until it ends, so nobody else can append meanwhile: later appends in it (logins
  // sharing a group commit) need not read it again. A transaction that rolls back is
  // never used again. (Savepoints would break this: a rollback to one would leave the
  // cached end ahead of the chain. None are used.)
  const tails = new WeakMap<Transaction<Database>, { seq: number; hash: string }>();

  return {
    async append(trx, principal, entries) {
      if (entries.length === 0) return;
      prepared ??= { tail: prepareTail(trx), insertOne: prepareInsertOne(trx) };
      let end = tails.get(trx);
      if (!end) {
        const last = (await trx.executeQuery(prepared.tail({}))).rows[0];
        end = { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH };
      }
      const at = deps.clock.nowMs();
      const linked = link(end, entries.map((entry) => auditFields(principal, entry, at)));
      if (linked.rows.length === 1) await trx.executeQuery(prepared.insertOne(linked.rows[0]!));
      else await insertInChunks(trx, "audit_log", linked.rows, AUDIT_COLUMNS.length);
      tails.set(trx, linked.end);
    },
    settle: async () => undefined,
    close: async () => undefined,
    written: () => undefined,
  };
}

/**
 * After an append, the first look: its transaction has usually committed by then. A
 * pass costs about seven round trips however many records it links, so under load the
 * passes are spaced rather than one per login; readers that must see the latest records
 * do not wait for it (`settle`).
 */
const LINK_DELAY_MS = 50;
/** Otherwise, a look this often for records others left (a CLI that was killed, a node that stopped). */
const IDLE_LOOK_MS = 2000;
/** Records moved into the chain a transaction; a pass takes as many as it finds. */
const PASS_LIMIT = 2000;
/** The chain's advisory lock: one node extends it at a time. */
const CHAIN_LOCK = 7211001;

/**
 * PostgreSQL: a transaction writes its records to `audit_pending` and takes no lock for
 * them. Shortly after, a pass (on any node, one at a time under an advisory lock)
 * moves every committed pending record into `audit_log`, linked in the order they were
 * written, in one short transaction: a record is kept exactly once, pending or linked.
 *
 * The chain once ran inside each writing transaction, under the advisory lock from the
 * append until the commit, its flush to disk included: every login of every node
 * committed one after another, about 500 a second on the development machine. Now the
 * writers run side by side, and a pass links as many records as have committed for the
 * price of one transaction.
 *
 * What this costs: a record's `seq` is given when it is linked, so `seq` follows the
 * order of linking, which may differ from `at` by the moments a record waited; and a
 * record is protected by the chain only once it is linked, within moments of its commit
 * while a node runs.
 */
function linkedAfterCommit(deps: { db: Kysely<Database>; clock: Clock; onLinkPass?: (outcome: LinkPassOutcome) => void }): AuditLog {
  const { db } = deps;
  let prepared: { tail: ReturnType<typeof prepareTail>; insertOne: ReturnType<typeof preparePendingInsert> } | undefined;
  let current: Promise<void> | null = null;
  let next: Promise<void> | null = null;
  let appended = false;
  let timer: NodeJS.Timeout | undefined;
  let timerDue = Infinity;
  let closed = false;

  /** Links every record committed before it began; returns how many it linked. */
  async function pass(): Promise<number> {
    appended = false;
    // A look first, without the lock: an idle chain costs one read.
    const waiting = await db.selectFrom("audit_pending").select("id").limit(1).execute();
    if (waiting.length === 0) return 0;
    let linked = 0;
    for (;;) {
      const moved = await db.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(${sql.lit(CHAIN_LOCK)})`.execute(trx);
        // Taken after the lock, so the statement sees every record committed before
        // the pass began, and none another pass has moved.
        const pending = (
          await sql<AuditPendingRow>`delete from audit_pending where id in (select id from audit_pending order by id limit ${sql.lit(PASS_LIMIT)}) returning *`.execute(trx)
        ).rows;
        if (pending.length === 0) return 0;
        pending.sort((a, b) => a.id - b.id);
        prepared ??= { tail: prepareTail(trx), insertOne: preparePendingInsert(trx) };
        const last = (await trx.executeQuery(prepared.tail({}))).rows[0];
        const linked = link(
          { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH },
          pending.map(({ id: _id, ...fields }) => fields),
        );
        await insertInChunks(trx, "audit_log", linked.rows, AUDIT_COLUMNS.length);
        return pending.length;
      });
      linked += moved;
      if (moved < PASS_LIMIT) return linked;
    }
  }

  async function reportedPass(): Promise<void> {
    try {
      const linked = await pass();
      if (linked > 0) deps.onLinkPass?.({ linked });
    } catch (error) {
      deps.onLinkPass?.({ failed: error });
      throw error;
    }
  }

  /** A pass that begins after this call: the current one may have looked too early. */
  function passAfterNow(): Promise<void> {
    if (!current) {
      current = reportedPass().finally(() => (current = null));
      return current;
    }
    next ??= current
      .catch(() => undefined)
      .then(() => {
        next = null;
        return passAfterNow();
      });
    return next;
  }

  function lookIn(ms: number): void {
    if (closed || Date.now() + ms >= timerDue) return;
    clearTimeout(timer);
    timerDue = Date.now() + ms;
    timer = setTimeout(() => {
      timer = undefined;
      timerDue = Infinity;
      passAfterNow().then(
        // Records appended while the pass ran may have committed after it looked.
        () => lookIn(appended ? LINK_DELAY_MS : IDLE_LOOK_MS),
        // The database is away: the records wait where they are, and the next look finds them.
        () => lookIn(IDLE_LOOK_MS),
      );
    }, ms);
    timer.unref();
  }
  lookIn(LINK_DELAY_MS);

  function written(): void {
    appended = true;
    lookIn(LINK_DELAY_MS);
  }

  return {
    async append(trx, principal, entries) {
      if (entries.length === 0) return;
      prepared ??= { tail: prepareTail(trx), insertOne: preparePendingInsert(trx) };
      const at = deps.clock.nowMs();
      const rows = entries.map((entry) => auditFields(principal, entry, at));
      if (rows.length === 1) await trx.executeQuery(prepared.insertOne(rows[0]!));
      else await insertInChunks(trx, "audit_pending", rows, PENDING_COLUMNS.length);
      written();
    },
    settle: passAfterNow,
    written,
    async close() {
      closed = true;
      clearTimeout(timer);
      await passAfterNow();
    },
  };
}

/** The chain's last record. The limit is written into the SQL: as a bound parameter it made SQLite's statement twice as slow. */
function prepareTail(db: Kysely<Database>) {
  return prepareQuery<Record<string, never>, Pick<AuditRow, "seq" | "hash">>(db, (db) => db.selectFrom("audit_log").select(["seq", "hash"]).orderBy("seq", "desc").limit(sql.lit(1)));
}

const AUDIT_COLUMNS = ["seq", "at", "actor", "operator_id", "action", "virtual_server_id", "target_type", "target_id", "token_serial", "user_pk", "from_state", "to_state", "reason", "details", "prev_hash", "hash"] as const;

function prepareInsertOne(db: Kysely<Database>) {
  return prepareInsert<"audit_log", AuditRow>(db, "audit_log", AUDIT_COLUMNS);
}

type AuditPendingRow = Selectable<AuditPendingTable>;

/**
 * PostgreSQL: an UPDATE and its audit record as one statement, compiled once. The
 * record is written only when the update changed a row (it must change at most one),
 * and the statement is its own transaction: one round trip where a transaction of its
 * own took four (begin, update, record, commit). The result's `numAffectedRows` is 1
 * when the row changed. Tell the audit log with `written()` afterwards. The update's
 * parameters and the record's columns share one namespace: no parameter may be named
 * after an audit column. `alsoWhenChanged`, a delete, goes with the update in the same
 * statement, made only when the update changed its row.
 */
export function prepareAuditedUpdate<Params extends Record<string, unknown> & { [K in keyof PendingAuditFields]?: never }>(
  db: Kysely<Database>,
  update: (db: QueryCreator<Database>, param: <Name extends keyof Params & string>(name: Name) => Params[Name]) => UpdateQueryBuilder<Database, "tokens", "tokens", UpdateResult>,
  alsoWhenChanged?: (db: QueryCreator<Database>, param: <Name extends keyof Params & string>(name: Name) => Params[Name]) => DeleteQueryBuilder<Database, keyof Database, DeleteResult>,
): (params: Params & PendingAuditFields) => CompiledQuery<never> {
  return prepareQuery<Params & PendingAuditFields, never>(db, (db, param) => {
    const changed = db.with("changed", (qc) => update(qc, param as never).returning(sql.lit(1).as("one")));
    // A further change that goes with the update, made only when the update changed its row.
    const withAlso = alsoWhenChanged
      ? (changed.with("also", (qc) => alsoWhenChanged(qc as unknown as QueryCreator<Database>, param as never).where(sql<boolean>`exists (select 1 from changed)`).returning(sql.lit(1).as("one")) as never) as unknown as typeof changed)
      : changed;
    return withAlso
      .insertInto("audit_pending")
      .columns(PENDING_COLUMNS)
      .expression((eb) =>
        eb.selectFrom("changed").select(
          // Parameters in a select list have no type to take from the target columns:
          // the numbers are cast, the text is taken as text.
          PENDING_COLUMNS.map((column) => (column === "at" ? sql`cast(${param(column)} as bigint)` : sql`cast(${param(column)} as text)`).as(column)),
        ),
      ) as never;
  });
}

const PENDING_COLUMNS = AUDIT_COLUMNS.filter((column) => column !== "seq" && column !== "prev_hash" && column !== "hash") as Exclude<(typeof AUDIT_COLUMNS)[number], "seq" | "prev_hash" | "hash">[];

function preparePendingInsert(db: Kysely<Database>) {
  return prepareInsert<"audit_pending", PendingAuditFields>(db, "audit_pending", PENDING_COLUMNS);
}

export type ChainVerdict =
  | { ok: true; records: number; lastHash: string }
  | { ok: false; records: number; brokenAtSeq: number; problem: string };

/** Walks the whole chain in order, a page at a time, and reports the first broken link. */
export async function verifyAuditChain(db: Kysely<Database>, onProgress?: (checked: number) => void): Promise<ChainVerdict> {
  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  let checked = 0;
  for (;;) {
    const page = await db
      .selectFrom("audit_log")
      .selectAll()
      .where("seq", ">=", expectedSeq)
      .orderBy("seq")
      .limit(5000)
      .execute();
    if (page.length === 0) return { ok: true, records: checked, lastHash: prevHash };
    for (const row of page) {
      if (row.seq !== expectedSeq) {
        return { ok: false, records: checked, brokenAtSeq: expectedSeq, problem: `record ${expectedSeq} is missing` };
      }
      if (row.prev_hash !== prevHash) {
        return { ok: false, records: checked, brokenAtSeq: row.seq, problem: "does not link to the record before it" };
      }
      const { hash, prev_hash: _prev, ...fields } = row;
      if (hashAuditRecord(prevHash, fields) !== hash) {
        return { ok: false, records: checked, brokenAtSeq: row.seq, problem: "its content does not match its hash" };
      }
      prevHash = hash;
      expectedSeq += 1;
      checked += 1;
    }
    onProgress?.(checked);
  }
}

export interface AuditQuery {
  virtualServerPaths: string[] | "all";
  virtualServerId?: string;
  fromMs?: number;
  toMs?: number;
  operatorId?: string;
  userPk?: string;
  tokenSerial?: string;
  action?: string;
  beforeSeq?: number;
  limit: number;
}

export function decodeSeqCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  const value = Number(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!Number.isSafeInteger(value) || value < 1) throw fail("CURSOR_INVALID");
  return value;
}

export function encodeSeqCursor(seq: number): string {
  return Buffer.from(String(seq), "utf8").toString("base64url");
}

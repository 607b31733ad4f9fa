import { hash } from "node:crypto";
import { sql, type Kysely, type Transaction } from "kysely";
import type { Clock } from "../../clock.js";
import { fail } from "../../errors.js";
import type { DatabaseKind } from "../../storage/database.js";
import { prepareInsert, prepareQuery } from "../../storage/prepared.js";
import type { AuditRow, Database } from "../../storage/schema.js";
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
}

export function createAuditLog(deps: { kind: DatabaseKind; clock: Clock }): AuditLog {
  // Every login appends one record: its two statements are compiled once (on first use,
  // from the first transaction, which has the dialect) instead of at every append.
  let prepared: { tail: ReturnType<typeof prepareTail>; insertOne: ReturnType<typeof prepareInsertOne> } | undefined;
  // The chain's end as this transaction sees it. Once a transaction holds the chain's
  // lock it holds it until it ends, so nobody else can append meanwhile: later appends in
  // it (logins sharing a group commit) need neither the lock nor the read again. A
  // transaction that rolls back is never used again. (Savepoints would break this: a
  // rollback to one would leave the cached end ahead of the chain. None are used.)
  const tails = new WeakMap<Transaction<Database>, { seq: number; hash: string }>();

  async function chainEnd(trx: Transaction<Database>): Promise<{ seq: number; hash: string }> {
    const known = tails.get(trx);
    if (known) return known;
    prepared ??= { tail: prepareTail(trx), insertOne: prepareInsertOne(trx) };
    // The chain needs one writer at a time. SQLite transactions here begin IMMEDIATE and
    // so already hold the write lock; PostgreSQL nodes take an advisory lock that ends
    // with the transaction.
    if (deps.kind === "postgres") {
      await sql`select pg_advisory_xact_lock(7211001)`.execute(trx);
    }
    const last = (await trx.executeQuery(prepared.tail({}))).rows[0];
    const end = { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH };
    tails.set(trx, end);
    return end;
  }

  return {
    async append(trx, principal, entries) {
      if (entries.length === 0) return;
      const last = await chainEnd(trx);
      prepared ??= { tail: prepareTail(trx), insertOne: prepareInsertOne(trx) };
      let seq = last.seq;
      let prevHash = last.hash;
      const at = deps.clock.nowMs();
      const rows: AuditRow[] = [];
      for (const entry of entries) {
        seq += 1;
        const record: AuditFields = {
          seq,
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
        const hash = hashAuditRecord(prevHash, record);
        rows.push({ ...record, prev_hash: prevHash, hash });
        prevHash = hash;
      }
      if (rows.length === 1) {
        await trx.executeQuery(prepared.insertOne(rows[0]!));
      } else {
        // 16 columns a row: 500 rows stay under both databases' parameter limits.
        for (let start = 0; start < rows.length; start += 500) {
          await trx.insertInto("audit_log").values(rows.slice(start, start + 500)).execute();
        }
      }
      tails.set(trx, { seq, hash: prevHash });
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

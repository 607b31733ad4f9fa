import { Readable } from "node:stream";
import { parse } from "csv-parse";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { UserRow } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import type { GroupsChanged } from "./service.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { newUserRow, userInputSchema, type UserInput } from "./user.js";

export interface ImportRowError {
  /** Line in the file, the header being line 1. */
  line: number;
  userId: string | null;
  code: "VALIDATION_FAILED" | "USER_EXISTS" | "CSV_INVALID";
  message: string;
}

export interface UserImportReport {
  imported: number;
  failed: number;
  /** The first errors, in file order; `failed` counts them all. */
  errors: ImportRowError[];
}

export interface ImportProgress {
  rows: number;
  imported: number;
  failed: number;
  bytes: number;
}

const MAX_LISTED_ERRORS = 1000;

// Header names people use in directory exports, folded to our fields.
const headerAliases: Record<string, keyof UserInput> = {
  userid: "userId",
  user: "userId",
  username: "userId",
  login: "userId",
  uid: "userId",
  firstname: "firstName",
  givenname: "firstName",
  lastname: "lastName",
  surname: "lastName",
  familyname: "lastName",
  sn: "lastName",
  email: "email",
  mail: "email",
  emailaddress: "email",
  groups: "groups",
  group: "groups",
};

function normaliseHeader(headers: string[]): string[] {
  const mapped = headers.map((header) => headerAliases[header.toLowerCase().replace(/[^a-z]/g, "")] ?? `ignored:${header}`);
  if (!mapped.includes("userId")) {
    throw fail("CSV_INVALID", { problem: "the header row has no userId column (userId, user, username, login)" });
  }
  return mapped;
}

interface PendingRow {
  line: number;
  input: UserInput;
}

/**
 * Imports users from CSV, streaming: rows are checked one by one and written in
 * batches, each batch (5,000 users by default) one transaction with its audit record, so an interrupted import
 * leaves whole batches and never half a user. Bad rows are reported with their line
 * and skipped; the good rows are kept.
 */
export function createUserImporter(deps: Pick<CoreDeps, "db" | "clock" | "audit"> & { onGroupsChanged?: GroupsChanged }) {
  const { db, clock, audit } = deps;

  return async function importUsers(
    principal: Principal,
    virtualServerId: string,
    source: string | Readable,
    options: { batchSize?: number; onProgress?: (progress: ImportProgress) => void } = {},
  ): Promise<UserImportReport> {
    await findVisibleVirtualServer(db, principal, virtualServerId, "users.manage");
    // 5,000 users a transaction: fewer commits, while the write lock is held only a fraction of a second.
    const batchSize = options.batchSize ?? 5000;
    const report: UserImportReport = { imported: 0, failed: 0, errors: [] };
    const progress: ImportProgress = { rows: 0, imported: 0, failed: 0, bytes: 0 };
    const seenInFile = new Set<string>();
    let batch: PendingRow[] = [];

    // Errors found while reading wait for the batch they belong to: rows already in the
    // database are only found when the batch is written, and the report lists errors in
    // file order.
    let pending: ImportRowError[] = [];
    const reject = (error: ImportRowError) => {
      report.failed += 1;
      pending.push(error);
    };
    const settleErrors = () => {
      pending.sort((a, b) => a.line - b.line);
      for (const error of pending) if (report.errors.length < MAX_LISTED_ERRORS) report.errors.push(error);
      pending = [];
    };

    const flush = async () => {
      if (batch.length === 0) return settleErrors();
      const rows = batch;
      batch = [];
      const imported = await db.transaction().execute(async (trx) => {
        const existing = new Set(
          (
            await trx
              .selectFrom("users")
              .select("user_id")
              .where("virtual_server_id", "=", virtualServerId)
              .where(
                "user_id",
                "in",
                rows.map((row) => row.input.userId),
              )
              .execute()
          ).map((row) => row.user_id),
        );
        const now = clock.nowMs();
        const users: UserRow[] = [];
        const groups: Array<{ user_pk: string; virtual_server_id: string; group_name: string }> = [];
        for (const { line, input } of rows) {
          if (existing.has(input.userId)) {
            reject({ line, userId: input.userId, code: "USER_EXISTS", message: `User ${input.userId} already exists` });
            continue;
          }
          const user = newUserRow(virtualServerId, input, now);
          users.push(user);
          for (const group of new Set(input.groups)) groups.push({ user_pk: user.id, virtual_server_id: virtualServerId, group_name: group });
        }
        // Parameter limits: 9 columns x 1000 users and 3 x 2000 groups stay well inside.
        for (let i = 0; i < users.length; i += 1000) await trx.insertInto("users").values(users.slice(i, i + 1000)).execute();
        for (let i = 0; i < groups.length; i += 2000) await trx.insertInto("user_groups").values(groups.slice(i, i + 2000)).execute();
        if (groups.length > 0 && deps.onGroupsChanged) {
          const joined = new Map<string, string[]>();
          for (const group of groups) joined.set(group.user_pk, [...(joined.get(group.user_pk) ?? []), group.group_name]);
          await deps.onGroupsChanged(trx, principal, virtualServerId, [...joined].map(([userPk, names]) => ({ userPk, joined: names, left: [] })));
        }
        if (users.length > 0) {
          await audit.append(trx, principal, [
            {
              action: "user.import",
              virtualServerId,
              targetType: "user",
              details: { count: users.length, firstUserId: users[0]!.user_id, lastUserId: users.at(-1)!.user_id },
            },
          ]);
        }
        return users.length;
      });
      settleErrors();
      report.imported += imported;
      progress.imported = report.imported;
      progress.failed = report.failed;
      options.onProgress?.({ ...progress });
    };

    const input = typeof source === "string" ? Readable.from([source]) : source;
    input.on("data", (chunk: Buffer | string) => {
      progress.bytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
    });
    const parser = input.pipe(
      parse({
        bom: true,
        columns: normaliseHeader,
        skip_empty_lines: true,
        trim: true,
        relax_column_count: true,
        info: true,
        skip_records_with_error: true,
        on_skip: (error) => {
          const line = (error as { lines?: number } | undefined)?.lines ?? 0;
          reject({ line, userId: null, code: "CSV_INVALID", message: error?.message ?? "unreadable row" });
        },
      }),
    );

    try {
      for await (const { record, info } of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number } }>) {
        progress.rows += 1;
        const line = info.lines;
        const candidate = {
          userId: record.userId ?? "",
          firstName: record.firstName ?? "",
          lastName: record.lastName ?? "",
          email: record.email ?? "",
          groups: (record.groups ?? "").split(/[;|]/).map((group) => group.trim()).filter(Boolean),
        };
        const parsed = userInputSchema.safeParse(candidate);
        if (!parsed.success) {
          const problems = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
          reject({ line, userId: candidate.userId || null, code: "VALIDATION_FAILED", message: problems });
          continue;
        }
        if (seenInFile.has(parsed.data.userId)) {
          reject({ line, userId: parsed.data.userId, code: "USER_EXISTS", message: `User ${parsed.data.userId} appears earlier in the file` });
          continue;
        }
        seenInFile.add(parsed.data.userId);
        batch.push({ line, input: parsed.data });
        if (batch.length >= batchSize) await flush();
      }
    } catch (error) {
      if (error instanceof Error && "code" in error && typeof error.code === "string" && error.code.startsWith("CSV_")) {
        // A broken file (say an unclosed quote) ends the reading; what was read stays.
        await flush();
        const line = (error as { lines?: number }).lines ?? 0;
        if (report.imported === 0 && progress.rows === 0 && error.code === "CSV_INVALID") throw error;
        reject({ line, userId: null, code: "CSV_INVALID", message: `${error.message}; the rest of the file was not read` });
        settleErrors();
        return report;
      }
      throw error;
    }
    await flush();
    return report;
  };
}

export type UserImporter = ReturnType<typeof createUserImporter>;

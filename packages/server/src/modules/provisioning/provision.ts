import { CompiledQuery, sql, type Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import type { DatabaseKind } from "../../storage/database.js";
import type { Database } from "../../storage/schema.js";
import type { AuditEntry } from "../audit/service.js";
import { queueMails } from "../mail/outbox.js";
import { compileEnrollmentTemplate, loadTemplate } from "../mail/templates.js";
import type { Principal } from "../operators/access.js";
import { effectivePolicy } from "../policy/service.js";
import { tokenTypes, type TokenType } from "../tokens/types.js";
import { hashEnrollmentCode, newEnrollmentCode } from "./codes.js";
import type { SelectedUser } from "./selection.js";
import type { App } from "./task.js";

export interface ProvisionRequest {
  virtualServerId: string;
  users: SelectedUser[];
  tokenType: TokenType;
  /** Apps the user may enroll into (mobile tokens); default: what the policy allows. */
  apps?: App[];
  /** Epoch ms; default: now plus the policy's enrollment lifetime. */
  stopAtMs?: number;
  kind: "manual" | "rule" | "migration";
  ruleId?: string | null;
}

export interface ProvisionDeps extends Pick<CoreDeps, "clock" | "audit" | "keyring" | "kind"> {
  /** Where users reach this server, for the links in mails. */
  publicUrl: () => string;
}

const CHUNK = 500;

/**
 * Binds each serial to its user, compare-and-set on the inventory state so that a token
 * taken meanwhile (another node, another task) fails the task. PostgreSQL joins the pairs
 * as a VALUES list in one UPDATE ... FROM; SQLite's planner walks that join badly (a scan
 * per pair), while a prepared single-row UPDATE costs it a few microseconds, so there
 * each row gets its own execution of one cached statement.
 */
async function bindTokens(trx: Transaction<Database>, kind: DatabaseKind, taskId: string, now: number, serials: string[], userPks: string[]): Promise<number> {
  if (kind === "postgres") {
    const pairs = sql.join(serials.map((serial, i) => sql`(${serial}, ${userPks[i]!})`));
    const result = await sql`
      update tokens set state = 'assigned', user_pk = m.user_pk, provisioning_task_id = ${taskId},
        state_reason = null, state_changed_at = ${now}, updated_at = ${now}
      from (select column1 as serial, column2 as user_pk from (values ${pairs}) as v) as m
      where tokens.serial = m.serial and tokens.state = 'inventory' and tokens.user_pk is null`.execute(trx);
    return Number(result.numAffectedRows ?? 0);
  }
  let bound = 0;
  for (let i = 0; i < serials.length; i++) {
    const result = await trx.executeQuery(
      CompiledQuery.raw(
        "update tokens set state = 'assigned', user_pk = ?, provisioning_task_id = ?, state_reason = null, state_changed_at = ?, updated_at = ? where serial = ? and state = 'inventory' and user_pk is null",
        [userPks[i], taskId, now, now, serials[i]],
      ),
    );
    bound += Number(result.numAffectedRows ?? 0);
  }
  return bound;
}
const MAX_STOP_MS = 365 * 24 * 3600 * 1000;

export function enrollmentUrl(publicUrl: string, code: string): string {
  return `${publicUrl}/enroll/${code}`;
}

/**
 * Provisions tokens from the virtual server's inventory to users, inside the caller's
 * transaction: the task, one token and one enrollment a user, the enrollment mails in
 * the outbox, the audit. Either all of it happens or, on any refusal, none.
 */
export async function provisionInTransaction(
  trx: Transaction<Database>,
  deps: ProvisionDeps,
  principal: Principal,
  request: ProvisionRequest,
): Promise<{ taskId: string; serials: string[] }> {
  const now = deps.clock.nowMs();
  const vs = await trx.selectFrom("virtual_servers").selectAll().where("id", "=", request.virtualServerId).executeTakeFirstOrThrow();
  const policy = (await effectivePolicy(trx, vs.id)).effective;
  const users = request.users;

  // Which apps: mobile tokens go into an app the policy allows; other types have none.
  const typeApps: readonly App[] = tokenTypes[request.tokenType].apps;
  let apps: App[] = [];
  if (typeApps.length > 0) {
    const asked = request.apps ?? policy.allowedApps;
    apps = asked.filter((app) => policy.allowedApps.includes(app) && typeApps.includes(app));
    if (apps.length === 0) throw fail("APPS_NOT_ALLOWED", { allowed: policy.allowedApps.join(", "), asked: asked.join(", ") });
  }
  const stopAt = request.stopAtMs ?? now + policy.enrollmentLifetimeDays * 24 * 3600 * 1000;
  if (stopAt <= now || stopAt > now + MAX_STOP_MS) throw fail("STOP_DATE_INVALID");

  const withoutEmail = users.filter((user) => user.email === "");
  if (withoutEmail.length > 0) {
    throw fail("USER_EMAIL_MISSING", { userIds: withoutEmail.slice(0, 20).map((u) => u.user_id).join(", ") }, { userIds: withoutEmail.map((u) => u.user_id) });
  }

  // Capacity counts the distinct users holding tokens (DESIGN section 1).
  if (vs.capacity !== null) {
    const holders = new Set<string>();
    const rows = await trx.selectFrom("tokens").select("user_pk").distinct().where("virtual_server_id", "=", vs.id).where("user_pk", "is not", null).execute();
    for (const row of rows) holders.add(row.user_pk!);
    const wanted = holders.size + users.filter((user) => !holders.has(user.id)).length;
    if (wanted > vs.capacity) throw fail("USER_CAPACITY_EXCEEDED", { id: vs.id, capacity: vs.capacity, wanted });
  }

  const inventory = await trx
    .selectFrom("tokens")
    .select("serial")
    .where("virtual_server_id", "=", vs.id)
    .where("state", "=", "inventory")
    .where("type", "=", request.tokenType)
    .where("user_pk", "is", null)
    .orderBy("serial")
    .limit(users.length)
    .execute();
  if (inventory.length < users.length) {
    throw fail("INVENTORY_SHORT", { available: inventory.length, type: request.tokenType, wanted: users.length });
  }

  const taskId = newId("task");
  await trx
    .insertInto("provisioning_tasks")
    .values({
      id: taskId,
      virtual_server_id: vs.id,
      kind: request.kind,
      token_type: request.tokenType,
      apps: JSON.stringify(apps),
      stop_at: stopAt,
      status: "open",
      rule_id: request.ruleId ?? null,
      created_by: principal.actor,
      created_at: now,
      updated_at: now,
    })
    .execute();

  const template = await loadTemplate(trx, vs.id);
  const renderSubject = compileEnrollmentTemplate({ ...template, text: "{{enrollUrl}}", html: "{{enrollUrl}}" });
  const subjectOf = (values: Parameters<typeof renderSubject>[0]) => renderSubject(values).subject;
  const serials = inventory.map((row) => row.serial);
  for (let start = 0; start < users.length; start += CHUNK) {
    const chunkUsers = users.slice(start, start + CHUNK);
    const chunkSerials = serials.slice(start, start + CHUNK);
    const bound = await bindTokens(trx, deps.kind, taskId, now, chunkSerials, chunkUsers.map((user) => user.id));
    if (bound !== chunkSerials.length) {
      throw fail("INVENTORY_SHORT", { available: bound, type: request.tokenType, wanted: chunkSerials.length });
    }

    const enrollments = [];
    const mails = [];
    const auditEntries: AuditEntry[] = [];
    for (let i = 0; i < chunkUsers.length; i++) {
      const user = chunkUsers[i]!;
      const serial = chunkSerials[i]!;
      const code = newEnrollmentCode();
      const enrollmentId = newId("enr");
      enrollments.push({
        id: enrollmentId,
        task_id: taskId,
        virtual_server_id: vs.id,
        token_serial: serial,
        user_pk: user.id,
        code_hash: hashEnrollmentCode(code),
        apps: JSON.stringify(apps),
        status: "pending",
        expires_at: stopAt,
        claimed_at: null,
        claim: null,
        enrolled_at: null,
        created_at: now,
        updated_at: now,
      });
      const values = {
        firstName: user.first_name,
        lastName: user.last_name,
        userId: user.user_id,
        virtualServerName: vs.name,
        enrollUrl: enrollmentUrl(deps.publicUrl(), code),
        expiresAt: stopAt,
        serial,
      };
      // The subject now; the bodies from the template when the mail is sent.
      mails.push({ virtualServerId: vs.id, kind: "enrollment", to: user.email, subject: subjectOf(values), enrollment: values, enrollmentId });
      auditEntries.push({
        action: "token.provision",
        virtualServerId: vs.id,
        targetType: "token",
        targetId: serial,
        tokenSerial: serial,
        userPk: user.id,
        fromState: "inventory",
        toState: "assigned",
        details: { taskId, kind: request.kind, apps },
      });
    }
    await trx.insertInto("enrollments").values(enrollments).execute();
    await queueMails(trx, { keyring: deps.keyring, clock: deps.clock }, mails);
    await deps.audit.append(trx, principal, auditEntries);
  }
  return { taskId, serials };
}

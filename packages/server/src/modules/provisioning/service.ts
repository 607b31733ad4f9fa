import type { Kysely, Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import { newId } from "../../ids.js";
import type { Database, ProvisioningTaskRow } from "../../storage/schema.js";
import { decodeSeqCursor } from "../audit/service.js";
import { cancelMailsForEnrollment, queueMails } from "../mail/outbox.js";
import { loadTemplate, renderEnrollmentMail } from "../mail/templates.js";
import { canSee, systemPrincipal, type Principal } from "../operators/access.js";
import { decodeTextCursor, encodeTextCursor } from "../users/service.js";
import { revokedChanges } from "../tokens/lifecycle-service.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import type { TokenType } from "../tokens/types.js";
import { hashEnrollmentCode, newEnrollmentCode } from "./codes.js";
import { enrollmentUrl, provisionInTransaction, type ProvisionDeps } from "./provision.js";
import { selectUsers, type UserSelection } from "./selection.js";
import { emptyCounts, enrollmentState, toTask, type App, type ProvisioningTask, type TaskUserRow } from "./task.js";

export interface CreateTaskInput {
  virtualServerId: string;
  users: UserSelection;
  tokenType: TokenType;
  apps?: App[];
  stopAt?: string;
}

/** Returns a token whose provisioning ended unenrolled to inventory, with any key it was given. */
export async function returnUnenrolledToken(
  trx: Transaction<Database>,
  deps: Pick<CoreDeps, "audit" | "clock">,
  principal: Principal,
  enrollment: { id: string; token_serial: string; user_pk: string; virtual_server_id: string },
  reason: string,
): Promise<void> {
  const now = deps.clock.nowMs();
  const token = await trx.selectFrom("tokens").select(["type"]).where("serial", "=", enrollment.token_serial).executeTakeFirst();
  // What revoking to inventory clears (a hardware seed stays with its device), as the lifecycle says.
  const returned = token
    ? await trx
        .updateTable("tokens")
        .set({ ...revokedChanges(token, "inventory"), state: "inventory", state_reason: reason, state_changed_at: now, updated_at: now })
        .where("serial", "=", enrollment.token_serial)
        .where("state", "=", "assigned")
        .where("user_pk", "=", enrollment.user_pk)
        .executeTakeFirst()
    : null;
  await cancelMailsForEnrollment(trx, enrollment.id);
  if (Number(returned?.numUpdatedRows ?? 0) === 1) {
    await deps.audit.append(trx, principal, [
      {
        action: "token.cancelProvisioning",
        virtualServerId: enrollment.virtual_server_id,
        targetType: "token",
        targetId: enrollment.token_serial,
        tokenSerial: enrollment.token_serial,
        userPk: enrollment.user_pk,
        fromState: "assigned",
        toState: "inventory",
        reason,
      },
    ]);
  }
}

export function createProvisioningService(deps: CoreDeps & { publicUrl: () => string; onMailQueued?: () => void }) {
  const { db, clock, audit } = deps;
  const provisionDeps: ProvisionDeps = { clock, audit, kind: deps.kind, keyring: deps.keyring, publicUrl: deps.publicUrl };

  async function findVisibleTask(trx: Kysely<Database>, principal: Principal, taskId: string): Promise<ProvisioningTaskRow> {
    const row = await trx
      .selectFrom("provisioning_tasks")
      .innerJoin("virtual_servers", "virtual_servers.id", "provisioning_tasks.virtual_server_id")
      .selectAll("provisioning_tasks")
      .select("virtual_servers.path as vs_path")
      .where("provisioning_tasks.id", "=", taskId)
      .executeTakeFirst();
    if (!row || !canSee(principal, { path: row.vs_path })) throw fail("TASK_NOT_FOUND", { id: taskId });
    const { vs_path: _path, ...task } = row;
    return task;
  }

  async function counts(taskIds: string[]) {
    const byTask = new Map(taskIds.map((id) => [id, emptyCounts()]));
    if (taskIds.length === 0) return byTask;
    const now = clock.nowMs();
    const rows = await db
      .selectFrom("enrollments")
      .leftJoin("outbox", "outbox.enrollment_id", "enrollments.id")
      .select(["enrollments.task_id", "enrollments.status", "enrollments.expires_at", "outbox.status as mail_status"])
      .where("enrollments.task_id", "in", taskIds)
      .where("enrollments.status", "!=", "replaced")
      .execute();
    for (const row of rows) {
      const bucket = byTask.get(row.task_id!)!;
      bucket.total += 1;
      bucket[enrollmentState(row.status, row.expires_at, row.mail_status, now)] += 1;
    }
    return byTask;
  }

  async function view(task: ProvisioningTaskRow): Promise<ProvisioningTask> {
    return toTask(task, (await counts([task.id])).get(task.id)!);
  }

  return {
    async createTask(principal: Principal, input: CreateTaskInput, kind: "manual" | "migration" = "manual"): Promise<ProvisioningTask> {
      const taskId = await db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, input.virtualServerId, "tokens.manage");
        const users = await selectUsers(trx, input.virtualServerId, input.users);
        const stopAtMs = input.stopAt === undefined ? undefined : Date.parse(input.stopAt);
        const result = await provisionInTransaction(trx, provisionDeps, principal, {
          virtualServerId: input.virtualServerId,
          users,
          tokenType: input.tokenType,
          apps: input.apps,
          stopAtMs,
          kind,
        });
        return result.taskId;
      });
      deps.onMailQueued?.();
      return this.getTask(principal, taskId);
    },

    async getTask(principal: Principal, taskId: string): Promise<ProvisioningTask> {
      return view(await findVisibleTask(db, principal, taskId));
    },

    /** The users of a task, a page at a time, with where each stands. */
    async listTaskUsers(principal: Principal, taskId: string, page: { cursor?: string; limit: number }): Promise<{ items: TaskUserRow[]; nextCursor: string | null }> {
      await findVisibleTask(db, principal, taskId);
      const after = decodeTextCursor(page.cursor);
      let query = db
        .selectFrom("enrollments")
        .innerJoin("users", "users.id", "enrollments.user_pk")
        .leftJoin("outbox", "outbox.enrollment_id", "enrollments.id")
        .select(["users.user_id", "users.email", "enrollments.token_serial", "enrollments.status", "enrollments.expires_at", "enrollments.enrolled_at", "outbox.status as mail_status"])
        .where("enrollments.task_id", "=", taskId)
        .where("enrollments.status", "!=", "replaced");
      if (after !== undefined) query = query.where("users.user_id", ">", after);
      const rows = await query.orderBy("users.user_id").limit(page.limit + 1).execute();
      const now = clock.nowMs();
      const items = rows.slice(0, page.limit).map((row) => ({
        userId: row.user_id,
        email: row.email,
        serial: row.token_serial,
        state: enrollmentState(row.status, row.expires_at, row.mail_status, now),
        mailStatus: row.mail_status,
        expiresAt: new Date(row.expires_at).toISOString(),
        enrolledAt: row.enrolled_at === null ? null : new Date(row.enrolled_at).toISOString(),
      }));
      return { items, nextCursor: rows.length > page.limit ? encodeTextCursor(items.at(-1)!.userId) : null };
    },

    async listTasks(principal: Principal, virtualServerId: string, page: { cursor?: string; limit: number }) {
      await findVisibleVirtualServer(db, principal, virtualServerId, "tokens.read");
      const before = decodeSeqCursor(page.cursor);
      let query = db.selectFrom("provisioning_tasks").selectAll().where("virtual_server_id", "=", virtualServerId);
      if (before !== undefined) query = query.where("created_at", "<", before);
      const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(page.limit + 1).execute();
      const pageRows = rows.slice(0, page.limit);
      const byTask = await counts(pageRows.map((row) => row.id));
      return {
        items: pageRows.map((row) => toTask(row, byTask.get(row.id)!)),
        nextCursor: rows.length > page.limit ? Buffer.from(String(pageRows.at(-1)!.created_at)).toString("base64url") : null,
      };
    },

    /** Removes a task: open enrollments die, their tokens go back to inventory, unsent mails are dropped. Enrolled tokens stay. */
    async cancelTask(principal: Principal, taskId: string): Promise<ProvisioningTask> {
      await db.transaction().execute(async (trx) => {
        const task = await findVisibleTask(trx, principal, taskId);
        await findVisibleVirtualServer(trx, principal, task.virtual_server_id, "tokens.manage");
        if (task.status === "cancelled") throw fail("TASK_CANCELLED", { id: taskId });
        const open = await trx.selectFrom("enrollments").selectAll().where("task_id", "=", taskId).where("status", "in", ["pending", "claimed"]).execute();
        const now = clock.nowMs();
        await trx.updateTable("provisioning_tasks").set({ status: "cancelled", updated_at: now }).where("id", "=", taskId).execute();
        for (const enrollment of open) {
          await trx.updateTable("enrollments").set({ status: "cancelled", claim: null, updated_at: now }).where("id", "=", enrollment.id).execute();
          await returnUnenrolledToken(trx, deps, principal, enrollment, "provisioning task cancelled");
        }
        await audit.append(trx, principal, [
          { action: "provisioning.cancel", virtualServerId: task.virtual_server_id, targetType: "token", targetId: taskId, details: { taskId, openEnrollments: open.length } },
        ]);
      });
      return this.getTask(principal, taskId);
    },

    /** A new stop date for every open enrollment of the task. */
    async updateStopDate(principal: Principal, taskId: string, stopAt: string): Promise<ProvisioningTask> {
      await db.transaction().execute(async (trx) => {
        const task = await findVisibleTask(trx, principal, taskId);
        await findVisibleVirtualServer(trx, principal, task.virtual_server_id, "tokens.manage");
        if (task.status === "cancelled") throw fail("TASK_CANCELLED", { id: taskId });
        const stopAtMs = Date.parse(stopAt);
        const now = clock.nowMs();
        if (!(stopAtMs > now) || stopAtMs > now + 365 * 24 * 3600 * 1000) throw fail("STOP_DATE_INVALID");
        await trx.updateTable("provisioning_tasks").set({ stop_at: stopAtMs, updated_at: now }).where("id", "=", taskId).execute();
        await trx.updateTable("enrollments").set({ expires_at: stopAtMs, updated_at: now }).where("task_id", "=", taskId).where("status", "in", ["pending", "claimed"]).execute();
        await audit.append(trx, principal, [
          { action: "provisioning.stop_date", virtualServerId: task.virtual_server_id, targetType: "token", targetId: taskId, details: { taskId, before: new Date(task.stop_at).toISOString(), after: stopAt } },
        ]);
      });
      return this.getTask(principal, taskId);
    },

    /** A new enrollment mail for one user of a task: a new code, and the old one dies. */
    async resendEnrollment(principal: Principal, taskId: string, userId: string): Promise<{ userId: string; serial: string; expiresAt: string }> {
      const result = await db.transaction().execute(async (trx) => {
        const task = await findVisibleTask(trx, principal, taskId);
        const vs = await findVisibleVirtualServer(trx, principal, task.virtual_server_id, "tokens.manage");
        if (task.status === "cancelled") throw fail("TASK_CANCELLED", { id: taskId });
        const open = await trx
          .selectFrom("enrollments")
          .innerJoin("users", "users.id", "enrollments.user_pk")
          .selectAll("enrollments")
          .select(["users.user_id", "users.first_name", "users.last_name", "users.email"])
          .where("enrollments.task_id", "=", taskId)
          .where("users.user_id", "=", userId)
          .where("enrollments.status", "in", ["pending", "claimed"])
          .executeTakeFirst();
        const now = clock.nowMs();
        if (!open || open.expires_at <= now) throw fail("ENROLLMENT_NOT_FOUND", { userId });
        const replaced = await trx.updateTable("enrollments").set({ status: "replaced", claim: null, updated_at: now }).where("id", "=", open.id).where("status", "=", open.status).executeTakeFirst();
        if (Number(replaced.numUpdatedRows) !== 1) throw fail("ENROLLMENT_NOT_FOUND", { userId });
        await cancelMailsForEnrollment(trx, open.id);
        // A key handed to a device that never confirmed dies with the old code.
        await trx.updateTable("tokens").set({ key_ciphertext: null, key_id: null, updated_at: now }).where("serial", "=", open.token_serial).where("state", "=", "assigned").where("type", "!=", "hardware").execute();
        const code = newEnrollmentCode();
        const enrollmentId = newId("enr");
        await trx
          .insertInto("enrollments")
          .values({
            id: enrollmentId,
            task_id: open.task_id,
            virtual_server_id: open.virtual_server_id,
            token_serial: open.token_serial,
            user_pk: open.user_pk,
            code_hash: hashEnrollmentCode(code),
            apps: open.apps,
            status: "pending",
            expires_at: open.expires_at,
            claimed_at: null,
            claim: null,
            enrolled_at: null,
            created_at: now,
            updated_at: now,
          })
          .execute();
        const values = {
          firstName: open.first_name,
          lastName: open.last_name,
          userId: open.user_id,
          virtualServerName: vs.name,
          enrollUrl: enrollmentUrl(deps.publicUrl(), code),
          expiresAt: open.expires_at,
          serial: open.token_serial,
        };
        const { subject } = renderEnrollmentMail(await loadTemplate(trx, vs.id), values);
        await queueMails(trx, { keyring: deps.keyring, clock }, [{ virtualServerId: vs.id, kind: "enrollment", to: open.email, subject, enrollment: values, enrollmentId }]);
        await audit.append(trx, principal, [
          { action: "provisioning.resend", virtualServerId: vs.id, targetType: "token", targetId: open.token_serial, tokenSerial: open.token_serial, userPk: open.user_pk, details: { taskId } },
        ]);
        return { userId, serial: open.token_serial, expiresAt: new Date(open.expires_at).toISOString() };
      });
      deps.onMailQueued?.();
      return result;
    },

    /**
     * Ends enrollments whose stop date has passed: the code dies and the token goes back
     * to inventory. Run periodically by the server; safe on several nodes at once.
     */
    async expireDue(limit = 1000): Promise<number> {
      const now = clock.nowMs();
      const due = await db.selectFrom("enrollments").selectAll().where("status", "in", ["pending", "claimed"]).where("expires_at", "<=", now).limit(limit).execute();
      let expired = 0;
      for (const enrollment of due) {
        await db.transaction().execute(async (trx) => {
          const ended = await trx
            .updateTable("enrollments")
            .set({ status: "expired", claim: null, updated_at: now })
            .where("id", "=", enrollment.id)
            .where("status", "=", enrollment.status)
            .executeTakeFirst();
          if (Number(ended.numUpdatedRows) !== 1) return;
          await returnUnenrolledToken(trx, deps, systemPrincipal, enrollment, "enrollment expired");
          expired += 1;
        });
      }
      return expired;
    },
  };
}

export type ProvisioningService = ReturnType<typeof createProvisioningService>;

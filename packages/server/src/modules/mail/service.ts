import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { OutboxRow } from "../../storage/schema.js";
import { requirePermission, type Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { createMailRenderer, extractEnrollUrl, type OutboxStatus } from "./outbox.js";
import { createMailTemplateService } from "./templates.js";

export interface OutboxItem {
  id: string;
  virtualServerId: string | null;
  kind: string;
  to: string;
  subject: string;
  status: OutboxStatus;
  attempts: number;
  nextAttemptAt: string | null;
  lastError: string | null;
  createdAt: string;
  sentAt: string | null;
  /** Only while the mail is not sent (nor cancelled): an operator without SMTP hands it over. */
  text?: string;
  enrollUrl?: string | null;
}

export interface OutboxQuery {
  /** One virtual server; without it every virtual server in the principal's scope. */
  virtualServerId?: string;
  status?: OutboxStatus;
  cursor?: string;
  limit: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function encodeCursor(row: Pick<OutboxRow, "created_at" | "id">): string {
  return Buffer.from(`${row.created_at}:${row.id}`, "utf8").toString("base64url");
}

function decodeCursor(cursor: string | undefined): { createdAt: number; id: string } | undefined {
  if (cursor === undefined) return undefined;
  const match = /^(\d{1,16}):([A-Za-z0-9_]{1,64})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!match) throw fail("CURSOR_INVALID");
  return { createdAt: Number(match[1]), id: match[2]! };
}

export function createMailService(deps: Pick<CoreDeps, "db" | "clock" | "audit" | "keyring">) {
  const { db, keyring } = deps;

  async function toItem(row: OutboxRow, render: ReturnType<typeof createMailRenderer>): Promise<OutboxItem> {
    const item: OutboxItem = {
      id: row.id,
      virtualServerId: row.virtual_server_id,
      kind: row.kind,
      to: row.recipient,
      subject: row.subject,
      status: row.status as OutboxStatus,
      attempts: row.attempts,
      nextAttemptAt: row.status === "queued" ? iso(row.next_attempt_at) : null,
      lastError: row.last_error,
      createdAt: new Date(row.created_at).toISOString(),
      sentAt: iso(row.sent_at),
    };
    const body = row.status === "sent" ? null : await render(row);
    if (body) {
      item.text = body.text;
      item.enrollUrl = extractEnrollUrl(body.text);
    }
    return item;
  }

  return {
    ...createMailTemplateService(deps),

    /**
     * The outbox, newest first. Unsent mail carries its enrollment link, so this takes
     * "users.manage" (admins and operators), not a read permission.
     */
    async listOutbox(principal: Principal, query: OutboxQuery): Promise<{ items: OutboxItem[]; nextCursor: string | null }> {
      const after = decodeCursor(query.cursor);
      let select = db.selectFrom("outbox").selectAll("outbox");
      if (query.virtualServerId !== undefined) {
        await findVisibleVirtualServer(db, principal, query.virtualServerId, "users.manage");
        select = select.where("outbox.virtual_server_id", "=", query.virtualServerId);
      } else {
        requirePermission(principal, "users.manage");
        const { path, includesChildren } = principal.scope;
        // The installer sees everything, mail of no virtual server included.
        if (principal.kind !== "installer") {
          select = select
            .innerJoin("virtual_servers", "virtual_servers.id", "outbox.virtual_server_id")
            .where((eb) =>
              includesChildren
                ? eb.and([eb("virtual_servers.path", ">=", path), eb("virtual_servers.path", "<", `${path}\uffff`)])
                : eb("virtual_servers.path", "=", path),
            );
        }
      }
      if (query.status) select = select.where("outbox.status", "=", query.status);
      if (after) {
        select = select.where((eb) =>
          eb.or([
            eb("outbox.created_at", "<", after.createdAt),
            eb.and([eb("outbox.created_at", "=", after.createdAt), eb("outbox.id", "<", after.id)]),
          ]),
        );
      }
      const rows = await select.orderBy("outbox.created_at", "desc").orderBy("outbox.id", "desc").limit(query.limit + 1).execute();
      const page = rows.slice(0, query.limit);
      const last = page.at(-1);
      const render = createMailRenderer(db, keyring);
      return { items: await Promise.all(page.map((row) => toItem(row, render))), nextCursor: rows.length > query.limit && last ? encodeCursor(last) : null };
    },
  };
}

export type MailService = ReturnType<typeof createMailService>;

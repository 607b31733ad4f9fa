import type { ProvisioningTaskRow } from "../../storage/schema.js";

export type App = "tessera" | "otp-app";
export type EnrollmentState = "pending" | "emailed" | "enrolled" | "expired" | "cancelled";

export interface TaskCounts {
  total: number;
  pending: number;
  emailed: number;
  enrolled: number;
  expired: number;
  cancelled: number;
}

export interface ProvisioningTask {
  id: string;
  virtualServerId: string;
  kind: "manual" | "rule" | "migration";
  tokenType: string;
  apps: App[];
  stopAt: string;
  status: "open" | "cancelled";
  createdBy: string;
  createdAt: string;
  counts: TaskCounts;
}

export interface TaskUserRow {
  userId: string;
  email: string;
  serial: string;
  state: EnrollmentState;
  mailStatus: string | null;
  expiresAt: string;
  enrolledAt: string | null;
}

/**
 * What a user's enrollment looks like from the console: enrolled, expired, cancelled,
 * or still open, where "emailed" means the mail left the outbox.
 */
export function enrollmentState(status: string, expiresAt: number, mailStatus: string | null, nowMs: number): EnrollmentState {
  if (status === "enrolled") return "enrolled";
  if (status === "cancelled") return "cancelled";
  if (status === "expired" || expiresAt <= nowMs) return "expired";
  return mailStatus === "sent" ? "emailed" : "pending";
}

export function emptyCounts(): TaskCounts {
  return { total: 0, pending: 0, emailed: 0, enrolled: 0, expired: 0, cancelled: 0 };
}

export function toTask(row: ProvisioningTaskRow, counts: TaskCounts): ProvisioningTask {
  return {
    id: row.id,
    virtualServerId: row.virtual_server_id,
    kind: row.kind as ProvisioningTask["kind"],
    tokenType: row.token_type,
    apps: JSON.parse(row.apps) as App[],
    stopAt: new Date(row.stop_at).toISOString(),
    status: row.status as ProvisioningTask["status"],
    createdBy: row.created_by,
    createdAt: new Date(row.created_at).toISOString(),
    counts,
  };
}

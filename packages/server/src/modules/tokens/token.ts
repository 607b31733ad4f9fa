import type { Kysely } from "kysely";
import type { Database } from "../../storage/schema.js";
import type { TokenState } from "./lifecycle.js";
import type { TokenType } from "./types.js";

export type PushOtpState = "enabled" | "disabled" | "not_applicable";

export interface Token {
  serial: string;
  type: TokenType;
  state: TokenState;
  virtualServerId: string;
  user: { userId: string; firstName: string; lastName: string; email: string } | null;
  otp: { mode: "totp" | "hotp"; algorithm: string; digits: number; periodSeconds: number };
  /** Whether key material is held (never the key itself). */
  hasKey: boolean;
  failures: number;
  lockedUntil: string | null;
  stateReason: string | null;
  stateChangedAt: string;
  createdAt: string;
  device: {
    app: "tessera" | "otp-app";
    target: string | null;
    deviceType: string | null;
    appVersion: string | null;
    pushAtEnrollment: PushOtpState;
    pushNow: PushOtpState;
    enrolledAt: string;
  } | null;
}

/** The one query that reads tokens with their user and device, for lists and details alike. */
export function selectTokenViews(db: Kysely<Database>) {
  return db
    .selectFrom("tokens")
    .leftJoin("users", "users.id", "tokens.user_pk")
    .leftJoin("devices", "devices.token_serial", "tokens.serial")
    .select([
      "tokens.serial",
      "tokens.type",
      "tokens.state",
      "tokens.virtual_server_id",
      "tokens.otp_mode",
      "tokens.algorithm",
      "tokens.digits",
      "tokens.period_seconds",
      "tokens.key_id",
      "tokens.failures",
      "tokens.locked_until",
      "tokens.state_reason",
      "tokens.state_changed_at",
      "tokens.created_at",
      "users.user_id",
      "users.first_name",
      "users.last_name",
      "users.email",
      "devices.app",
      "devices.target",
      "devices.device_type",
      "devices.app_version",
      "devices.push_at_enrollment",
      "devices.push_now",
      "devices.enrolled_at",
    ]);
}

type TokenViewRow = Awaited<ReturnType<ReturnType<typeof selectTokenViews>["executeTakeFirstOrThrow"]>>;

const iso = (ms: number) => new Date(ms).toISOString();

export function toToken(row: TokenViewRow): Token {
  return {
    serial: row.serial,
    type: row.type as TokenType,
    state: row.state as TokenState,
    virtualServerId: row.virtual_server_id,
    user:
      row.user_id === null
        ? null
        : { userId: row.user_id, firstName: row.first_name ?? "", lastName: row.last_name ?? "", email: row.email ?? "" },
    otp: {
      mode: row.otp_mode as "totp" | "hotp",
      algorithm: row.algorithm,
      digits: Number(row.digits),
      periodSeconds: Number(row.period_seconds),
    },
    hasKey: row.key_id !== null,
    failures: Number(row.failures),
    lockedUntil: row.locked_until === null ? null : iso(row.locked_until),
    stateReason: row.state_reason,
    stateChangedAt: iso(row.state_changed_at),
    createdAt: iso(row.created_at),
    device:
      row.app === null
        ? null
        : {
            app: row.app as "tessera" | "otp-app",
            target: row.target,
            deviceType: row.device_type,
            appVersion: row.app_version,
            pushAtEnrollment: row.push_at_enrollment as PushOtpState,
            pushNow: row.push_now as PushOtpState,
            enrolledAt: iso(row.enrolled_at ?? 0),
          },
  };
}

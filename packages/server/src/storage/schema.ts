import type { Generated, Insertable, Selectable, Updateable } from "kysely";

// Times are milliseconds since the epoch in a 64-bit integer on both databases, and
// booleans are 0/1 integers: one representation, so one query layer serves both.

export interface VirtualServersTable {
  id: string;
  name: string;
  parent_id: string | null;
  /** Materialised path of ids from the root, "/root/child/": scope checks are a prefix test. */
  path: string;
  capacity: number | null;
  created_at: number;
  updated_at: number;
}

export interface OperatorsTable {
  id: string;
  email: string;
  name: string;
  password_hash: string | null;
  role: string;
  virtual_server_id: string;
  scope_children: number;
  disabled: number;
  created_at: number;
  updated_at: number;
}

export interface ApiKeysTable {
  id: string;
  operator_id: string;
  name: string;
  secret_hash: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

export interface SessionsTable {
  id: string;
  operator_id: string;
  secret_hash: string;
  created_at: number;
  expires_at: number;
}

export interface UsersTable {
  id: string;
  virtual_server_id: string;
  user_id: string;
  first_name: string;
  last_name: string;
  email: string;
  /**
   * What a user search matches (modules/users/search.ts): the user id, first name, last
   * name and email, case-folded, each after a unit separator (U+001F).
   */
  search_key: string;
  created_at: number;
  updated_at: number;
}

export interface UserGroupsTable {
  user_pk: string;
  virtual_server_id: string;
  group_name: string;
}

export interface TokensTable {
  serial: string;
  virtual_server_id: string;
  type: string;
  state: string;
  user_pk: string | null;
  otp_mode: string;
  algorithm: string;
  digits: number;
  period_seconds: number;
  key_ciphertext: string | null;
  key_id: string | null;
  hotp_counter: Generated<number>;
  last_totp_step: number | null;
  drift_steps: Generated<number>;
  failures: Generated<number>;
  locked_until: number | null;
  state_reason: string | null;
  created_at: number;
  updated_at: number;
  state_changed_at: number;
  /** The provisioning task that gave the token to its user, while it has one. */
  provisioning_task_id: string | null;
}

export interface DevicesTable {
  token_serial: string;
  app: string;
  target: string | null;
  device_type: string | null;
  app_version: string | null;
  push_at_enrollment: string;
  push_now: string;
  enrolled_at: number;
  updated_at: number;
  /** The app instance: one device id for all tokens enrolled in it. */
  device_id: string | null;
  /** ECDSA P-256 public key (raw, base64url) that signs the device's requests. */
  signing_public_key: string | null;
  os: string | null;
  os_version: string | null;
  /** Web Push subscription (JSON) when the device gave one. */
  push_subscription: string | null;
  live_capable: Generated<number>;
  last_seen_at: number | null;
}

export interface PoliciesTable {
  virtual_server_id: string;
  settings: string;
  updated_at: number;
}

export interface AuditLogTable {
  seq: number;
  at: number;
  actor: string;
  operator_id: string | null;
  action: string;
  virtual_server_id: string | null;
  target_type: string;
  target_id: string | null;
  token_serial: string | null;
  user_pk: string | null;
  from_state: string | null;
  to_state: string | null;
  reason: string | null;
  details: string | null;
  prev_hash: string;
  hash: string;
}

/** An audit record written, not yet linked into the chain (PostgreSQL; see modules/audit). */
export interface AuditPendingTable extends Omit<AuditLogTable, "seq" | "prev_hash" | "hash"> {
  id: Generated<number>;
}

export interface SerialCountersTable {
  prefix: string;
  next_value: number;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface ProvisioningRulesTable {
  id: string;
  virtual_server_id: string;
  group_name: string;
  token_type: string;
  apps: string;
  created_at: number;
}

export interface ProvisioningTasksTable {
  id: string;
  virtual_server_id: string;
  kind: string;
  token_type: string;
  apps: string;
  stop_at: number;
  status: string;
  rule_id: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
}

export interface EnrollmentsTable {
  id: string;
  task_id: string | null;
  virtual_server_id: string;
  token_serial: string;
  user_pk: string;
  code_hash: string;
  apps: string;
  status: string;
  expires_at: number;
  claimed_at: number | null;
  /** Key agreement state between enrollDevice and confirmEnrollment (JSON). */
  claim: string | null;
  enrolled_at: number | null;
  created_at: number;
  updated_at: number;
}

export interface OutboxTable {
  id: string;
  virtual_server_id: string | null;
  kind: string;
  recipient: string;
  subject: string;
  body_ciphertext: string | null;
  body_key_id: string | null;
  status: string;
  attempts: Generated<number>;
  next_attempt_at: number;
  lease_until: number | null;
  last_error: string | null;
  message_id: string;
  enrollment_id: string | null;
  created_at: number;
  sent_at: number | null;
}

export interface MailTemplatesTable {
  virtual_server_id: string;
  kind: string;
  subject: string;
  text: string;
  html: string;
  updated_at: number;
}

export interface ApplicationsTable {
  id: string;
  virtual_server_id: string;
  name: string;
  kind: string;
  resource_name: string;
  push_otp: number;
  push_mode: string;
  /** How long a push login here waits for the user: the challenge's lifetime (10 to 300). */
  push_timeout_seconds: number;
  radius_addresses: string | null;
  radius_secret_ciphertext: string | null;
  radius_secret_key_id: string | null;
  api_key_id: string | null;
  api_key_hash: string | null;
  created_at: number;
  updated_at: number;
}

export interface ChallengesTable {
  id: string;
  virtual_server_id: string;
  application_id: string;
  user_pk: string;
  /** JSON list of the devices (device ids) the challenge goes to. */
  device_ids: string;
  resource_name: string;
  source: string;
  number_to_match: string;
  status: string;
  answered_serial: string | null;
  created_at: number;
  expires_at: number;
  answered_at: number | null;
  /** When a RADIUS client in challenge mode came back with it and was let in (once). */
  redeemed_at: number | null;
  /** 1 while its devices with a Web Push subscription are owed the message that it ended. */
  end_push_owed: number;
  wake_push_owed: number;
  /** JSON list of the devices still owed the wake message, when some push services took it and others did not; null: all of them. */
  wake_owed_devices: string | null;
}

/** A secret of the service itself (the Web Push key pair), sealed under the master key. */
export interface ServerSecretsTable {
  name: string;
  public_value: string;
  secret_ciphertext: string;
  secret_key_id: string;
  created_at: number;
}

/** Failed logins against one key (a source address or a user) within a window; PostgreSQL only. */
export interface AuthFailuresTable {
  key: string;
  failures: number;
  window_ends: number;
}

export interface Database {
  virtual_servers: VirtualServersTable;
  operators: OperatorsTable;
  api_keys: ApiKeysTable;
  sessions: SessionsTable;
  users: UsersTable;
  user_groups: UserGroupsTable;
  tokens: TokensTable;
  devices: DevicesTable;
  policies: PoliciesTable;
  audit_log: AuditLogTable;
  audit_pending: AuditPendingTable;
  serial_counters: SerialCountersTable;
  provisioning_rules: ProvisioningRulesTable;
  provisioning_tasks: ProvisioningTasksTable;
  enrollments: EnrollmentsTable;
  outbox: OutboxTable;
  mail_templates: MailTemplatesTable;
  applications: ApplicationsTable;
  challenges: ChallengesTable;
  server_secrets: ServerSecretsTable;
  auth_failures: AuthFailuresTable;
  meta: MetaTable;
}

export type VirtualServerRow = Selectable<VirtualServersTable>;
export type OperatorRow = Selectable<OperatorsTable>;
export type UserRow = Selectable<UsersTable>;
export type TokenRow = Selectable<TokensTable>;
export type NewToken = Insertable<TokensTable>;
export type TokenUpdate = Updateable<TokensTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type EnrollmentRow = Selectable<EnrollmentsTable>;
export type ProvisioningTaskRow = Selectable<ProvisioningTasksTable>;
export type OutboxRow = Selectable<OutboxTable>;
export type ApplicationRow = Selectable<ApplicationsTable>;
export type ChallengeRow = Selectable<ChallengesTable>;

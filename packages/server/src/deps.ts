import type { Kysely } from "kysely";
import type { Clock } from "./clock.js";
import type { Keyring } from "./crypto/keyring.js";
import type { AuditLog } from "./modules/audit/service.js";
import type { DatabaseKind } from "./storage/database.js";
import type { Database } from "./storage/schema.js";

/** What the domain services are built from; each takes only the parts it needs. */
export interface CoreDeps {
  db: Kysely<Database>;
  kind: DatabaseKind;
  clock: Clock;
  audit: AuditLog;
  keyring: Keyring;
}

import { Migrator, type Migration, type MigrationProvider } from "kysely";
import type { Storage } from "./database.js";
import { initialMigration } from "./migrations/001-initial.js";
import { provisioningMigration } from "./migrations/002-provisioning.js";
import { applicationsMigration } from "./migrations/003-applications.js";
import { challengesMigration } from "./migrations/004-challenges.js";
import { serverSecretsMigration } from "./migrations/005-server-secrets.js";
import { guessingLimitsMigration } from "./migrations/006-guessing-limits.js";
import { userSearchMigration } from "./migrations/007-user-search.js";
import { unkeyedUsersMigration } from "./migrations/008-unkeyed-users.js";
import { challengeRedemptionMigration } from "./migrations/009-challenge-redemption.js";
import { pushTimeoutMigration } from "./migrations/010-push-timeout.js";
import { auditPendingMigration } from "./migrations/011-audit-pending.js";
import { challengesByUserMigration } from "./migrations/012-challenges-by-user.js";
import { endedPushOwedMigration } from "./migrations/013-ended-push-owed.js";
import { wakePushOwedMigration } from "./migrations/014-wake-push-owed.js";
import { wakeOwedDevicesMigration } from "./migrations/015-wake-owed-devices.js";

// Migrations are code, listed here in order, identical for both databases except where
// a migration asks for the database kind.
function migrationsFor(storage: Storage): Record<string, Migration> {
  return {
    "001-initial": initialMigration(storage.kind),
    "002-provisioning": provisioningMigration(storage.kind),
    "003-applications": applicationsMigration(storage.kind),
    "004-challenges": challengesMigration(storage.kind),
    "005-server-secrets": serverSecretsMigration(storage.kind),
    "006-guessing-limits": guessingLimitsMigration(storage.kind),
    "007-user-search": userSearchMigration(storage.kind),
    "008-unkeyed-users": unkeyedUsersMigration(),
    "009-challenge-redemption": challengeRedemptionMigration(storage.kind),
    "010-push-timeout": pushTimeoutMigration(),
    "011-audit-pending": auditPendingMigration(storage.kind),
    "012-challenges-by-user": challengesByUserMigration(),
    "013-ended-push-owed": endedPushOwedMigration(),
    "014-wake-push-owed": wakePushOwedMigration(),
    "015-wake-owed-devices": wakeOwedDevicesMigration(),
  };
}

export function createMigrator(storage: Storage): Migrator {
  const provider: MigrationProvider = { getMigrations: async () => migrationsFor(storage) };
  return new Migrator({ db: storage.db, provider });
}

export interface MigrationReport {
  applied: string[];
}

export async function migrateToLatest(storage: Storage): Promise<MigrationReport> {
  const { error, results } = await createMigrator(storage).migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return { applied: (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName) };
}

/** True when every migration this build knows has been applied (for /readyz). */
export async function isMigrated(storage: Storage): Promise<boolean> {
  const migrations = await createMigrator(storage).getMigrations();
  return migrations.every((migration) => migration.executedAt !== undefined);
}

import { systemClock, type Clock } from "./clock.js";
import type { Config } from "./config.js";
import { loadKeyring, type Keyring } from "./crypto/keyring.js";
import { createAuditLog } from "./modules/audit/service.js";
import { createOperatorService } from "./modules/operators/service.js";
import { createPolicyService } from "./modules/policy/service.js";
import { createTokenInventory } from "./modules/tokens/inventory-service.js";
import { createTokenLifecycle } from "./modules/tokens/lifecycle-service.js";
import { createUserImporter } from "./modules/users/import.js";
import { createUserService } from "./modules/users/service.js";
import { createVirtualServerService } from "./modules/virtual-servers/service.js";
import { openStorage, type Storage } from "./storage/database.js";
import { migrateToLatest } from "./storage/migrate.js";

/** The domain services over one storage: what the HTTP API and the CLI both drive. */
export function createServices(storage: Storage, keyring: Keyring, options: { clock?: Clock; sessionTtlSeconds?: number } = {}) {
  const clock = options.clock ?? systemClock;
  const audit = createAuditLog({ kind: storage.kind, clock });
  const deps = { db: storage.db, kind: storage.kind, clock, audit, keyring };
  return {
    storage,
    keyring,
    clock,
    audit,
    virtualServers: createVirtualServerService(deps),
    operators: createOperatorService({ ...deps, sessionTtlSeconds: options.sessionTtlSeconds ?? 12 * 3600 }),
    users: createUserService(deps),
    importUsers: createUserImporter(deps),
    policy: createPolicyService(deps),
    tokens: createTokenInventory(deps),
    tokenLifecycle: createTokenLifecycle(deps),
  };
}

export type Services = ReturnType<typeof createServices>;

/** Opens the configured database, applies migrations and builds the services. */
export async function openCore(config: Config, options: { migrate?: boolean; clock?: Clock } = {}): Promise<Services> {
  const keyring = loadKeyring(config.masterKey);
  const storage = openStorage(config.database);
  try {
    if (options.migrate ?? true) await migrateToLatest(storage);
  } catch (error) {
    await storage.close();
    throw error;
  }
  return createServices(storage, keyring, { clock: options.clock, sessionTtlSeconds: config.sessionTtlSeconds });
}

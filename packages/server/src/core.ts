import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { rootCertificates } from "node:tls";
import { systemClock, type Clock } from "./clock.js";
import { DEFAULT_WEB_PUSH_HOSTS, type Config } from "./config.js";
import { loadKeyring, type Keyring } from "./crypto/keyring.js";
import { createAuditLog } from "./modules/audit/service.js";
import { createOperatorService } from "./modules/operators/service.js";
import { createPolicyService } from "./modules/policy/service.js";
import { createTokenInventory } from "./modules/tokens/inventory-service.js";
import { createTokenLifecycle } from "./modules/tokens/lifecycle-service.js";
import { createApplicationService } from "./modules/applications/service.js";
import { createResync } from "./modules/auth/resync.js";
import { createAuthService } from "./modules/auth/service.js";
import { createEnrollmentEngine } from "./modules/enrollment/engine.js";
import { createEnrollmentService } from "./modules/enrollment/service.js";
import { createMetrics } from "./modules/metrics/metrics.js";
import { createChallengeHub } from "./modules/push/hub.js";
import { createPushService } from "./modules/push/service.js";
import { createWebPush, type WebPushOptions } from "./modules/push/web-push.js";
import { createMailService } from "./modules/mail/service.js";
import { createMigrationService } from "./modules/provisioning/migration.js";
import { createProvisioningRules } from "./modules/provisioning/rules.js";
import { createProvisioningService } from "./modules/provisioning/service.js";
import { createUserImporter } from "./modules/users/import.js";
import { createUserService } from "./modules/users/service.js";
import { createVirtualServerService } from "./modules/virtual-servers/service.js";
import { openStorage, type Storage } from "./storage/database.js";
import { migrateToLatest } from "./storage/migrate.js";
import { writeBatcherFor } from "./storage/write-batch.js";

/** The domain services over one storage: what the HTTP API and the CLI both drive. */
export interface ServiceOptions {
  clock?: Clock;
  sessionTtlSeconds?: number;
  /**
   * Where users reach this server (links in enrollment mails), or how to learn it: a
   * server on a port picked at start knows its address only once it listens.
   */
  publicUrl?: string | (() => string);
  /** Web Push to devices whose app is not running. @default subject mailto:tessera@localhost, the public push services */
  webPush?: WebPushOptions;
  /** Told of Web Push messages that did not go out. */
  onWebPushFailure?: (deviceId: string, detail: string) => void;
  /** Told when audit records could not be linked into the chain (PostgreSQL): they wait, and the next pass tries again. */
  onAuditLinkFailure?: (error: unknown) => void;
  /** Told when work after a commit failed (a login, a deletion): what was committed stands. */
  onFollowUpFailure?: (what: string, error: unknown) => void;
}

export function createServices(storage: Storage, keyring: Keyring, options: ServiceOptions = {}) {
  const clock = options.clock ?? systemClock;
  const metrics = createMetrics();
  const audit = createAuditLog({
    db: storage.db,
    kind: storage.kind,
    clock,
    onLinkPass: (outcome) => {
      metrics.auditLinkPass(outcome);
      if ("failed" in outcome) options.onAuditLinkFailure?.(outcome.failed);
    },
  });
  storage.beforeClose(() => audit.close());
  const deps = { db: storage.db, kind: storage.kind, clock, audit, keyring };
  const configuredUrl = options.publicUrl ?? "http://127.0.0.1:8080";
  const publicUrl = typeof configuredUrl === "function" ? configuredUrl : () => configuredUrl;
  // The mail worker, when one runs, registers here to hear of newly queued mail.
  const mailListeners = new Set<() => void>();
  const notifyMail = () => mailListeners.forEach((listener) => listener());
  const rules = createProvisioningRules({ ...deps, publicUrl });
  // Group changes (users, imports) run the provisioning rules inside the same transaction.
  const onGroupsChanged = async (...args: Parameters<typeof rules.applyInTransaction>) => {
    await rules.applyInTransaction(...args);
    notifyMail();
  };
  const tokenLifecycle = createTokenLifecycle(deps);
  const provisioning = createProvisioningService({ ...deps, publicUrl, onMailQueued: notifyMail });
  const enrollmentEngine = createEnrollmentEngine({ ...deps, onMailQueued: notifyMail });
  const hub = createChallengeHub();
  const webPush = createWebPush(deps, options.webPush ?? { subject: "mailto:tessera@localhost", allowedHosts: DEFAULT_WEB_PUSH_HOSTS });
  // One group commit for every login and push answer of this node (on PostgreSQL, a transaction each).
  const writes = writeBatcherFor(storage.kind, storage.db);
  // A push login the user denied counts against the source that asked, as a wrong
  // passcode does (the auth service keeps the limits; it is made below).
  const push = createPushService({
    ...deps,
    hub,
    verifySigned: enrollmentEngine.verifySigned,
    webPush,
    metrics,
    writes,
    onWebPushFailure: options.onWebPushFailure,
    countDenied: (tx, denied) => auth.countDeniedPushes(tx, denied),
  });
  // Application changes reach every node through the hub (PostgreSQL NOTIFY between nodes).
  const applications = createApplicationService({
    ...deps,
    announceChange: () => hub.applicationsChanged(),
    // After the deletion's commit: should it fail, the deletion stands, and the push
    // logins end at the next expiry sweep (closeOrphaned) instead. One that fails does
    // not keep the others open.
    closeChallengesOf: async (application) => {
      let open: string[] = [];
      try {
        open = await push.openOfApplication(application.id);
      } catch (error) {
        options.onFollowUpFailure?.("closing a deleted application's push logins", error);
      }
      for (const id of open) {
        try {
          await push.cancel(id, application, { by: "deleted" });
        } catch (error) {
          options.onFollowUpFailure?.(`closing the push login ${id} of a deleted application`, error);
        }
      }
    },
  });
  hub.onApplicationsChanged(() => applications.forgetApiKeys());
  const auth = createAuthService({ ...deps, push, metrics, writes, onFollowUpFailure: options.onFollowUpFailure });
  return {
    publicUrl,
    onMailQueued: (listener: () => void) => mailListeners.add(listener),
    storage,
    keyring,
    clock,
    audit,
    virtualServers: createVirtualServerService(deps),
    operators: createOperatorService({ ...deps, sessionTtlSeconds: options.sessionTtlSeconds ?? 12 * 3600 }),
    users: createUserService({ ...deps, onGroupsChanged }),
    importUsers: createUserImporter({ ...deps, onGroupsChanged }),
    policy: createPolicyService(deps),
    tokens: createTokenInventory(deps),
    tokenLifecycle,
    provisioning,
    provisioningRules: rules,
    migration: createMigrationService({ db: storage.db, audit, provisioning, lifecycle: tokenLifecycle }),
    enrollment: createEnrollmentService({ ...deps, onMailQueued: notifyMail }, enrollmentEngine),
    push,
    pushHub: hub,
    webPush,
    mail: createMailService(deps),
    applications,
    auth,
    metrics,
    resyncToken: createResync(deps),
  };
}

export type Services = ReturnType<typeof createServices>;

/** Opens the configured database, applies migrations and builds the services. */
export async function openCore(
  config: Config,
  options: {
    migrate?: boolean;
    clock?: Clock;
    onWebPushFailure?: ServiceOptions["onWebPushFailure"];
    onAuditLinkFailure?: ServiceOptions["onAuditLinkFailure"];
    onFollowUpFailure?: ServiceOptions["onFollowUpFailure"];
    /** A long-running server: SQLite checkpoints in a thread of their own. */
    backgroundCheckpoints?: boolean;
    /** Instead of the configured address (a server on a port picked at start). */
    publicUrl?: () => string;
  } = {},
): Promise<Services> {
  const keyring = loadKeyring(config.masterKey);
  const storage = openStorage(config.database, { backgroundCheckpoints: options.backgroundCheckpoints });
  try {
    if (options.migrate ?? true) await migrateToLatest(storage);
  } catch (error) {
    await storage.close();
    throw error;
  }
  const caFile = config.webPush.caFile;
  return createServices(storage, keyring, {
    clock: options.clock,
    sessionTtlSeconds: config.sessionTtlSeconds,
    publicUrl: options.publicUrl ?? config.publicUrl,
    webPush: {
      subject: config.webPush.subject,
      allowedHosts: config.webPush.allowedHosts,
      ...(config.webPush.proxy ? { proxy: config.webPush.proxy } : {}),
      // The system's authorities and the extra ones: an agent with `ca` would trust only those.
      ...(caFile ? { agent: () => new Agent({ ca: [...rootCertificates, readFileSync(caFile, "utf8")] }) } : {}),
    },
    onWebPushFailure: options.onWebPushFailure,
    onAuditLinkFailure: options.onAuditLinkFailure,
    onFollowUpFailure: options.onFollowUpFailure,
  });
}

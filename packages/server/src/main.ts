import type { FastifyInstance } from "fastify";
import type { Config } from "./config.js";
import { openCore, type Services } from "./core.js";
import { buildHttpApp } from "./http/app.js";
import { startMailDelivery } from "./modules/mail/worker.js";
import { connectHubAcrossNodes } from "./modules/push/notify.js";
import { startTesseraRadius } from "./radius/tessera.js";

export { loadConfig } from "./config.js";
export { openCore, createServices } from "./core.js";
export { buildHttpApp } from "./http/app.js";

export interface RunningServer {
  services: Services;
  app: FastifyInstance;
  url: string;
  /** The RADIUS server's UDP address, when RADIUS runs. */
  radius: { address: string; port: number } | null;
  /** Reads the RADIUS clients from the applications now, instead of at the next refresh. */
  refreshRadiusClients(): Promise<void>;
  close(): Promise<void>;
}

/** How often each node closes the push challenges that expired since its last look. */
const EXPIRED_CHALLENGE_SWEEP_MS = 5_000;
const OWED_END_LOOK_MS = 30_000;
/** How often each node sends the Web Push messages of open push logins that their node did not send. */
const OWED_WAKE_LOOK_MS = 5_000;

/** Composition root: config -> storage -> services -> surfaces. */
export async function startServer(config: Config): Promise<RunningServer> {
  // Web Push failures go to the log, and a port picked at start is known, only once the
  // server listens.
  const late: { log?: FastifyInstance["log"]; publicUrl: string } = { publicUrl: config.publicUrl };
  const services = await openCore(config, {
    backgroundCheckpoints: true,
    onWebPushFailure: (deviceId, detail) => late.log?.warn({ deviceId, detail }, "web push not delivered"),
    onAuditLinkFailure: (error) => late.log?.error({ err: error }, "audit records not linked into the chain; they wait and are tried again"),
    onFollowUpFailure: (what, error) => late.log?.warn({ err: error }, `${what} failed; what was committed stands`),
    publicUrl: () => late.publicUrl,
  });
  const app = await buildHttpApp(services, { bodyLimitBytes: config.http.bodyLimitBytes, logLevel: config.logLevel });
  late.log = app.log;
  try {
    await app.listen({ host: config.http.host, port: config.http.port });
  } catch (error) {
    await services.storage.close();
    throw error;
  }
  // Mail leaves the outbox from here; newly queued mail wakes the worker at once.
  const mail = startMailDelivery({ db: services.storage.db, keyring: services.keyring, clock: services.clock }, config.mail, app.log);
  services.onMailQueued(() => mail.worker.notify());
  // Enrollments past their stop date die and give their tokens back to inventory; users
  // an older node wrote during a rolling upgrade get their search keys; push challenges
  // a day past their expiry go.
  let sweeping: Promise<unknown> = Promise.resolve();
  const sweeper = setInterval(() => {
    sweeping = Promise.all([
      services.provisioning.expireDue().catch((error: unknown) => app.log.error({ err: error }, "enrollment expiry failed")),
      services.users.fillMissingSearchKeys().catch((error: unknown) => app.log.error({ err: error }, "search keys not filled")),
      services.push.pruneEnded().catch((error: unknown) => app.log.error({ err: error }, "ended push challenges not pruned")),
    ]);
  }, 60_000);
  // Push challenges nobody answered are closed and audited within seconds of their
  // expiry, and the phones that show them hear that they ended (Web Push included, so
  // that the notification leaves the tray). One indexed read when there are none.
  // The same look ends open push logins whose application was deleted meanwhile.
  const expirer = everyWithoutOverlap(
    EXPIRED_CHALLENGE_SWEEP_MS,
    async () => {
      await services.push.closeExpired();
      await services.push.closeOrphaned();
    },
    (error) => app.log.error({ err: error }, "expired push challenges not closed"),
  );
  // The Web Push messages that push logins ended which their node did not send (it
  // stopped after the commit, or the push service failed) go out from here.
  const teller = everyWithoutOverlap(OWED_END_LOOK_MS, () => services.push.sendOwedEnds(), (error) => app.log.error({ err: error }, "owed push end messages not sent"));
  // And the messages that ask for an answer, while the login is open.
  const waker = everyWithoutOverlap(OWED_WAKE_LOOK_MS, () => services.push.sendOwedWakes(), (error) => app.log.error({ err: error }, "owed push request messages not sent"));
  sweeper.unref();
  const acrossNodes = config.database.kind === "postgres" ? await connectHubAcrossNodes(services.pushHub, services.storage.db, config.database.url, app.log) : null;
  const radius = config.radius ? await startTesseraRadius(services, { ...config.radius, logger: app.log }) : null;
  if (radius) services.metrics.watchRadius(() => radius.stats());
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.http.port;
  const host = config.http.host === "0.0.0.0" ? "127.0.0.1" : config.http.host;
  // Without TESSERA_PUBLIC_URL the links name this server's own address, port included.
  if (new URL(config.publicUrl).port === "0") late.publicUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    services,
    app,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    radius: radius ? radius.address() : null,
    refreshRadiusClients: async () => radius?.refreshClients(),
    async close() {
      await radius?.close();
      await acrossNodes?.close();
      clearInterval(sweeper);
      await Promise.all([sweeping, expirer.stop(), teller.stop(), waker.stop()]);
      await mail.close();
      await app.close();
      await services.storage.close();
    },
  };
}

/**
 * Runs `task` every `ms`; a run still going (a slow database) is not joined by another.
 * The timer does not keep the process alive; `stop` ends it and waits for a run in progress.
 */
function everyWithoutOverlap(ms: number, task: () => Promise<unknown>, failed: (error: unknown) => void): { stop(): Promise<unknown> } {
  let running: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    running ??= task()
      .catch(failed)
      .finally(() => (running = null));
  }, ms);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      return running ?? Promise.resolve();
    },
  };
}

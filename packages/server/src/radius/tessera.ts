import type { Services } from "../core.js";
import { isIP } from "node:net";
import { addressMatcher, entrySpecificity } from "../modules/applications/addresses.js";
import { asksForPush } from "../modules/auth/service.js";
import { isMigrated } from "../storage/migrate.js";
import type { ApplicationRow } from "../storage/schema.js";
import { createRadiusServer, type RadiusClient, type RadiusLogger, type RadiusServer } from "./server.js";

/** One address or range of a RADIUS application's list. */
interface ClientEntry {
  matches: (address: string) => boolean;
  /** The entry's prefix length for sources of its family (see entrySpecificity): the most specific entry wins. */
  specificity: number;
  client: RadiusClient;
}

/**
 * The end user's address as the NAS gives it (Calling-Station-Id), else the NAS's own:
 * an empty or blank Calling-Station-Id says nothing, and must not put every such NAS of
 * the virtual server under one source for the guessing limits.
 */
function sourceOf(request: { callingStationId: string | null; source: { address: string } }): string {
  return request.callingStationId?.trim() || request.source.address;
}

/** The Reply-Message when the user did not answer on the phone before the challenge ended. */
const NO_ANSWER = "No answer from your phone";

/** How long Status-Server waits for the readiness check before it stays silent. */
const STATUS_TIMEOUT_MS = 2_000;

/** How often the table of RADIUS clients is read again from the applications. */
const CLIENT_TABLE_REFRESH_MS = 10_000;

/**
 * Tessera's RADIUS server: clients are the RADIUS applications of every virtual server,
 * recognised by source address and shared secret (where ranges overlap, the secret that
 * verifies the request decides, then the most specific range); decisions come from the same authentication service as REST.
 * The client table is built once and rebuilt whenever an application changes, on this
 * node or another (and every ten seconds, should a notification be lost), so that a
 * datagram never costs a query or a decryption before its client is known.
 */
export async function startTesseraRadius(services: Services, options: { host: string; port: number; logger?: RadiusLogger }): Promise<RadiusServer & { refreshClients(): Promise<void> }> {
  // One table a family, each in its own order: ::ffff:10.0.0.0/104 is a /8 for IPv4 sources.
  let tables: { ipv4: ClientEntry[]; ipv6: ClientEntry[] } = { ipv4: [], ipv6: [] };
  let applications = new Map<string, ApplicationRow>();
  // Reads may overlap (a change notified during the periodic read): the newest read wins.
  let started = 0;
  let applied = 0;
  const refreshClients = async () => {
    const turn = ++started;
    const rows = await services.storage.db.selectFrom("applications").selectAll().where("kind", "=", "radius").execute();
    if (turn < applied) return;
    applied = turn;
    // Where ranges of two applications overlap, the shared secret decides whose request
    // it is, so that an application of one virtual server (10.0.0.0/8, even 0.0.0.0/0)
    // cannot take the requests of another's NAS. Where both secrets would verify, the
    // entry with the longer prefix that holds the source decides (10.1.0.0/16 of one over
    // 10.0.0.0/8 of another), then the older application.
    const entries = rows
      .sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
      .flatMap((row) => {
        const client = { id: row.id, secret: services.applications.radiusSecretOf(row) };
        return (JSON.parse(row.radius_addresses ?? "[]") as string[]).map((entry) => ({ matches: addressMatcher([entry]), specificity: entrySpecificity(entry), client }));
      });
    // A stable sort: among entries as specific, the older application's comes first.
    const tableFor = (family: "ipv4" | "ipv6") =>
      entries
        .filter((entry) => entry.specificity[family] >= 0)
        .map((entry) => ({ ...entry, specificity: entry.specificity[family] }))
        .sort((a, b) => b.specificity - a.specificity);
    tables = { ipv4: tableFor("ipv4"), ipv6: tableFor("ipv6") };
    applications = new Map(rows.map((row) => [row.id, row]));
  };
  await refreshClients();
  const refresh = () => void refreshClients().catch((error: unknown) => options.logger?.error({ err: error }, "RADIUS client table refresh failed"));
  const timer = setInterval(refresh, CLIENT_TABLE_REFRESH_MS);
  timer.unref();
  // A change on any node (a new client, a new secret, a deleted application) applies at once.
  const stopListening = services.pushHub.onApplicationsChanged(refresh);
  // Ends the waits for the phone when the server stops: a wait can last minutes, and
  // close() waits for every request being decided, so that none outlives the database.
  const stopping = new AbortController();

  /**
   * Closes a push challenge (one a State names: if it is this application's and this
   * user's); the login's answer goes out, or not, whatever happens here.
   */
  async function cancelChallenge(challengeId: string, application: ApplicationRow, why: { by: "typed"; userId: string } | { by: "stopped" }): Promise<void> {
    // Our States are challenge ids (ASCII); PostgreSQL text holds no NUL.
    if (challengeId.includes("\0") || (why.by === "typed" && why.userId.includes("\0"))) return;
    try {
      await services.push.cancel(challengeId, { id: application.id, virtualServerId: application.virtual_server_id }, why);
    } catch (error) {
      options.logger?.error({ err: error }, why.by === "typed" ? "RADIUS: closing the push challenge of a typed passcode failed" : "RADIUS: closing a push challenge nobody waits for any more failed");
    }
  }

  const server = await createRadiusServer({
    host: options.host,
    port: options.port,
    logger: options.logger,
    // Status-Server is answered when the node is ready as GET /readyz says it (database
    // reachable and migrated) within two seconds: a NAS that asks is told the truth about
    // whether logins can be decided here.
    async ready() {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), STATUS_TIMEOUT_MS)));
      try {
        return await Promise.race([isMigrated(services.storage), late]);
      } finally {
        clearTimeout(timer);
      }
    },
    findClients: (address) => {
      const found: RadiusClient[] = [];
      // The server hands sources over plain: an IPv4-mapped one as its IPv4 address.
      const table = isIP(address) === 4 ? tables.ipv4 : tables.ipv6;
      for (const entry of table) if (entry.matches(address) && !found.includes(entry.client)) found.push(entry.client);
      return found;
    },
    async refused(request) {
      const application = applications.get(request.clientId);
      if (!application) return;
      const reason = request.reason === "not-pap" ? "not_pap" : "no_user_name";
      await services.auth.refuse(
        {
          application,
          userId: request.userName ?? "",
          source: sourceOf(request),
          method: "radius",
          client: { address: request.source.address, nasIdentifier: request.nasIdentifier },
        },
        reason,
      );
    },
    async authenticate(request) {
      const application = applications.get(request.clientId);
      if (!application) return { result: "reject", replyMessage: "Access denied" };
      const asked = {
        application,
        userId: request.userName,
        source: sourceOf(request),
        method: "radius" as const,
        client: { address: request.source.address, nasIdentifier: request.nasIdentifier },
      };
      // A RADIUS request waits for a push answer as long as the challenge lives: the
      // application's push timeout.
      const pushWaitMs = application.push_timeout_seconds * 1000;
      // An answer to our Access-Challenge: the State names the push login, which lets this
      // user in once it is approved, and only once. A passcode typed in the answer instead
      // (the phone is offline, say) is checked as any passcode.
      if (request.state && asksForPush(request.password)) {
        const redeemed = await services.auth.redeemChallenge({ ...asked, challengeId: request.state.toString("utf8") }, pushWaitMs, stopping.signal);
        return redeemed.result === "accept" ? { result: "accept" } : { result: "reject", replyMessage: redeemed.reason === "no_answer" || redeemed.reason === "expired" ? NO_ANSWER : "Access denied" };
      }
      const outcome = await services.auth.authenticate({ ...asked, passcode: request.password });
      // A passcode typed in answer to our Access-Challenge ends that login either way (the
      // NAS does not come back with the State after Access-Reject): the push challenge is
      // closed, so that the phone cannot approve what nobody waits for any more.
      if (request.state && outcome.result !== "pending") await cancelChallenge(request.state.toString("utf8"), application, { by: "typed", userId: request.userName });
      if (outcome.result === "pending") {
        if (application.push_mode === "challenge") {
          return { result: "challenge", state: Buffer.from(outcome.challengeId, "utf8"), replyMessage: `${outcome.message}, then press Enter (or type your passcode)`, sessionTimeoutSeconds: application.push_timeout_seconds };
        }
        // Hold mode: the request waits for the user; the NAS retransmits meanwhile and is answered from the cache.
        const decided = await services.auth.challengeOutcome(asked, outcome.challengeId, pushWaitMs, stopping.signal);
        if (decided.status === "pending" && stopping.signal.aborted) {
          // Stopping: no answer. The NAS's next try (at another server, or here after the
          // restart) opens another push login, so this one, which nobody will wait for,
          // leaves the phone rather than wait there to be approved for nothing.
          await cancelChallenge(outcome.challengeId, application, { by: "stopped" });
          stopping.signal.throwIfAborted();
        }
        return decided.status === "accept" ? { result: "accept" } : { result: "reject", replyMessage: decided.status === "pending" || decided.reason === "expired" ? NO_ANSWER : "Access denied" };
      }
      return outcome.result === "accept" ? { result: "accept" } : { result: "reject", replyMessage: outcome.message };
    },
  });
  return {
    ...server,
    refreshClients,
    async close() {
      clearInterval(timer);
      stopListening();
      stopping.abort();
      await server.close();
    },
  };
}

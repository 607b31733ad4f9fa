import { sql, type Kysely } from "kysely";
import pg from "pg";
import type { Database } from "../../storage/schema.js";
import type { ChallengeHub, HubEvent } from "./hub.js";

const CHANNEL = "tessera_push";
/** The name the listening connection shows in pg_stat_activity. */
export const LISTENER_APPLICATION_NAME = "tessera listen";
/** Waits before listening again after the connection was lost: doubling, up to the last. */
const RECONNECT_DELAYS_MS = [250, 500, 1_000, 2_000, 5_000, 10_000];

/**
 * Nodes sharing one PostgreSQL tell each other about push logins and application
 * changes with LISTEN/NOTIFY: a challenge opened on one node wakes the device's poll
 * held by another at once, an answer wakes the RADIUS or REST request waiting
 * elsewhere, and a rotated API key or a new RADIUS secret applies on every node at once.
 * A lost listening connection is opened again; until then waiters still see the
 * database within half a second, applications are read again within ten seconds, and
 * once it listens again this node drops what it kept of the applications, since it may
 * have missed a change meanwhile.
 */
export async function connectHubAcrossNodes(hub: ChallengeHub, db: Kysely<Database>, databaseUrl: string, logger?: { warn(fields: object, message: string): void }) {
  const deliver = hub.connect((event) => {
    void sql`select pg_notify(${CHANNEL}, ${JSON.stringify(event)})`.execute(db).catch((error: unknown) => logger?.warn({ err: error }, "NOTIFY failed; other nodes see the change within half a second"));
  });
  let client: pg.Client | null = null;
  let closed = false;
  let failures = 0;
  let retry: NodeJS.Timeout | undefined;

  const listen = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: databaseUrl, application_name: LISTENER_APPLICATION_NAME });
    next.on("notification", (message) => {
      if (message.channel !== CHANNEL || !message.payload) return;
      try {
        deliver(JSON.parse(message.payload) as HubEvent);
      } catch {
        // Not ours to understand: ignore.
      }
    });
    next.on("error", (error) => {
      logger?.warn({ err: error }, "LISTEN connection lost; reading the database until it is back");
    });
    next.on("end", () => {
      if (client === next) client = null;
      if (!closed) reconnectLater();
    });
    try {
      await next.connect();
      await next.query(`listen ${CHANNEL}`);
    } catch (error) {
      await next.end().catch(() => undefined);
      throw error;
    }
    client = next;
    if (closed) await next.end();
  };

  const reconnectLater = () => {
    if (retry || closed) return;
    const delay = RECONNECT_DELAYS_MS[Math.min(failures, RECONNECT_DELAYS_MS.length - 1)]!;
    failures += 1;
    retry = setTimeout(() => {
      retry = undefined;
      listen()
        .then(() => {
          failures = 0;
          // Changes made while nobody listened went unheard here.
          deliver({ kind: "applications" });
        })
        .catch((error: unknown) => {
          logger?.warn({ err: error }, "LISTEN connection could not be opened again; trying later");
          reconnectLater();
        });
    }, delay);
    retry.unref();
  };

  await listen();
  return {
    close: async () => {
      closed = true;
      clearTimeout(retry);
      await client?.end();
    },
  };
}

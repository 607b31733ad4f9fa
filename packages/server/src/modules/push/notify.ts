import { sql, type Kysely } from "kysely";
import pg from "pg";
import type { Database } from "../../storage/schema.js";
import type { ChallengeHub, HubEvent } from "./hub.js";

const CHANNEL = "tessera_push";

/**
 * Nodes sharing one PostgreSQL tell each other about push logins and application
 * changes with LISTEN/NOTIFY: a challenge opened on one node wakes the device's poll
 * held by another at once, an answer wakes the RADIUS or REST request waiting
 * elsewhere, and a rotated API key or a new RADIUS secret applies on every node at once.
 * Without it (a dropped connection) waiters still see the database within half a
 * second, and applications are read again within ten seconds.
 */
export async function connectHubAcrossNodes(hub: ChallengeHub, db: Kysely<Database>, databaseUrl: string, logger?: { warn(fields: object, message: string): void }) {
  const client = new pg.Client({ connectionString: databaseUrl });
  const deliver = hub.connect((event) => {
    void sql`select pg_notify(${CHANNEL}, ${JSON.stringify(event)})`.execute(db).catch((error: unknown) => logger?.warn({ err: error }, "NOTIFY failed; other nodes see the change within half a second"));
  });
  client.on("notification", (message) => {
    if (message.channel !== CHANNEL || !message.payload) return;
    try {
      deliver(JSON.parse(message.payload) as HubEvent);
    } catch {
      // Not ours to understand: ignore.
    }
  });
  client.on("error", (error) => logger?.warn({ err: error }, "LISTEN connection lost; falling back to reading the database"));
  await client.connect();
  await client.query(`listen ${CHANNEL}`);
  return { close: () => client.end() };
}

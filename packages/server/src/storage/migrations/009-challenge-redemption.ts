import { sql, type Kysely } from "kysely";
import type { DatabaseKind } from "../database.js";

// When a RADIUS client in challenge mode came back with the challenge's State and was
// let in: an approved push login opens one session, not one per replay of that State.
export function challengeRedemptionMigration(kind: DatabaseKind) {
  const bigint = kind === "postgres" ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("challenges").addColumn("redeemed_at", bigint).execute();
    },
  };
}

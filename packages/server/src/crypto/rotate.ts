import type { Kysely } from "kysely";
import type { Services } from "../core.js";
import { sealingContext } from "./keyring.js";
import { installerPrincipal } from "../modules/operators/access.js";
import type { Database } from "../storage/schema.js";

/**
 * Every column sealed under the master key, with the additional authenticated data it
 * was sealed with. Rotation re-encrypts all of them and pruning keeps every key any of
 * them still names: a key dropped while one RADIUS secret or queued mail still needed
 * it would lose that secret or mail for good.
 */
export const SEALED_COLUMNS = [
  { kind: "tokens", table: "tokens", id: "serial", ciphertext: "key_ciphertext", keyId: "key_id", context: sealingContext.tokenKey },
  { kind: "radiusSecrets", table: "applications", id: "id", ciphertext: "radius_secret_ciphertext", keyId: "radius_secret_key_id", context: sealingContext.radiusSecret },
  { kind: "queuedMail", table: "outbox", id: "id", ciphertext: "body_ciphertext", keyId: "body_key_id", context: sealingContext.queuedMail },
  { kind: "serverSecrets", table: "server_secrets", id: "name", ciphertext: "secret_ciphertext", keyId: "secret_key_id", context: sealingContext.serverSecret },
] as const satisfies ReadonlyArray<{ kind: string; table: keyof Database; id: string; ciphertext: string; keyId: string; context: (id: string) => string }>;

export type SealedKind = (typeof SEALED_COLUMNS)[number]["kind"];

/** The tables are named from the list above, so queries over them are untyped here. */
type AnyDatabase = Kysely<Record<string, Record<string, string | null>>>;

/** The master key ids that sealed columns still use. */
export async function masterKeysInUse(db: Kysely<Database>): Promise<string[]> {
  const any = db as unknown as AnyDatabase;
  const used = new Set<string>();
  for (const column of SEALED_COLUMNS) {
    const rows = await any.selectFrom(column.table).select(column.keyId).distinct().where(column.keyId, "is not", null).execute();
    for (const row of rows) used.add(String(row[column.keyId]));
  }
  return [...used];
}

/**
 * Re-encrypts everything sealed under an older master key, a batch per transaction.
 * Safe to interrupt and run again: each row names the key it is under, and a row is
 * only rewritten while it still names the key it was read under.
 */
export async function reencryptSealedColumns(services: Services, onProgress?: (done: number) => void): Promise<{ reencrypted: number; byKind: Record<SealedKind, number> }> {
  const db = services.storage.db as unknown as AnyDatabase;
  const { keyring, audit } = services;
  const byKind = Object.fromEntries(SEALED_COLUMNS.map((column) => [column.kind, 0])) as Record<SealedKind, number>;
  let reencrypted = 0;
  for (const column of SEALED_COLUMNS) {
    for (;;) {
      const batch = await db
        .selectFrom(column.table)
        .select([column.id, column.ciphertext, column.keyId])
        .where(column.keyId, "is not", null)
        .where(column.keyId, "!=", keyring.currentKeyId)
        .orderBy(column.id)
        .limit(1000)
        .execute();
      if (batch.length === 0) break;
      let done = 0;
      await services.storage.db.transaction().execute(async (trx) => {
        for (const row of batch) {
          const id = String(row[column.id]);
          const plain = keyring.decrypt(String(row[column.ciphertext]), String(row[column.keyId]), column.context(id));
          const sealed = keyring.encrypt(plain, column.context(id));
          plain.fill(0);
          const updated = await (trx as unknown as AnyDatabase)
            .updateTable(column.table)
            .set({ [column.ciphertext]: sealed.ciphertext, [column.keyId]: sealed.keyId })
            .where(column.id, "=", id)
            .where(column.keyId, "=", String(row[column.keyId]))
            .executeTakeFirst();
          // A row changed meanwhile (mail sent and wiped, secret regenerated) is left as it is now.
          done += Number(updated.numUpdatedRows);
        }
        await audit.append(trx, installerPrincipal, [
          { action: "keyring.reencrypt", targetType: "keyring", targetId: keyring.currentKeyId, details: { kind: column.kind, count: done } },
        ]);
      });
      byKind[column.kind] += done;
      reencrypted += done;
      onProgress?.(reencrypted);
      // Rows that changed under us no longer match the filter, so the loop ends.
      if (done === 0 && batch.length < 1000) break;
    }
  }
  return { reencrypted, byKind };
}

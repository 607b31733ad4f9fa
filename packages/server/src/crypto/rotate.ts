import type { Services } from "../core.js";
import { installerPrincipal } from "../modules/operators/access.js";

/**
 * Re-encrypts every token key that is not under the current master key, a batch per
 * transaction. Safe to interrupt and run again: each row names the key it is under.
 */
export async function reencryptTokenKeys(services: Services, onProgress?: (done: number) => void): Promise<{ reencrypted: number }> {
  const { db } = services.storage;
  const { keyring, audit } = services;
  let reencrypted = 0;
  for (;;) {
    const batch = await db
      .selectFrom("tokens")
      .select(["serial", "key_ciphertext", "key_id"])
      .where("key_id", "is not", null)
      .where("key_id", "!=", keyring.currentKeyId)
      .orderBy("serial")
      .limit(1000)
      .execute();
    if (batch.length === 0) break;
    await db.transaction().execute(async (trx) => {
      for (const row of batch) {
        const plain = keyring.decrypt(row.key_ciphertext!, row.key_id!, row.serial);
        const { ciphertext, keyId } = keyring.encrypt(plain, row.serial);
        plain.fill(0);
        await trx
          .updateTable("tokens")
          .set({ key_ciphertext: ciphertext, key_id: keyId })
          .where("serial", "=", row.serial)
          .where("key_id", "=", row.key_id)
          .execute();
      }
      await audit.append(trx, installerPrincipal, [
        { action: "keyring.reencrypt", targetType: "keyring", targetId: keyring.currentKeyId, details: { count: batch.length } },
      ]);
    });
    reencrypted += batch.length;
    onProgress?.(reencrypted);
  }
  return { reencrypted };
}

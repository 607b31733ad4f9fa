import { hasValidLuhnCheckDigit, luhnCheckDigit } from "@tessera/otp";
import type { Transaction } from "kysely";
import type { Database } from "../../storage/schema.js";
import { tokenTypes, type GeneratedTokenType } from "./types.js";

/**
 * Generated serials: the type's prefix, nine digits and a Luhn check digit, "MP0000000017".
 * Numbers come from one counter row per prefix, advanced in the caller's transaction, so
 * they are unique across every node sharing the database.
 */
const DIGITS = 9;
const GENERATED = /^(MP|EM)(\d{9})(\d)$/;
const HARDWARE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function formatSerial(prefix: string, number: number): string {
  const body = String(number).padStart(DIGITS, "0");
  return `${prefix}${body}${luhnCheckDigit(body)}`;
}

/** Returns why a serial cannot be one, or null when it could be. */
export function serialProblem(serial: string): string | null {
  if (/^(MP|EM)\d+$/.test(serial)) {
    const match = GENERATED.exec(serial);
    if (!match) return `generated serials have ${DIGITS + 1} digits after the prefix`;
    return hasValidLuhnCheckDigit(match[2]! + match[3]!) ? null : "the check digit does not match";
  }
  return HARDWARE.test(serial) ? null : "serials are 1 to 64 letters, digits, '.', '_' or '-'";
}

export async function reserveSerials(trx: Transaction<Database>, type: GeneratedTokenType, count: number): Promise<string[]> {
  const prefix = tokenTypes[type].serialPrefix;
  await trx
    .insertInto("serial_counters")
    .values({ prefix, next_value: 1 })
    .onConflict((conflict) => conflict.column("prefix").doNothing())
    .execute();
  const { next_value: end } = await trx
    .updateTable("serial_counters")
    .set((eb) => ({ next_value: eb("next_value", "+", count) }))
    .where("prefix", "=", prefix)
    .returning("next_value")
    .executeTakeFirstOrThrow();
  const first = Number(end) - count;
  return Array.from({ length: count }, (_, i) => formatSerial(prefix, first + i));
}

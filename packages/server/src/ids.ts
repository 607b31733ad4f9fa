import { randomBytes } from "node:crypto";
import { encodeBase32 } from "@tessera/otp";

/** Random ids with a readable prefix: "vs_", "op_", "usr_"...; 80 random bits. */
export function newId(prefix: string): string {
  return `${prefix}_${encodeBase32(randomBytes(10)).toLowerCase()}`;
}

/** A random secret for API keys and session tokens: 256 bits. */
export function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

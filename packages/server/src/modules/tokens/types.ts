/**
 * Token types are definitions, not subclasses: each says what it is capable of, and
 * the lifecycle and (later) enrollment and verification read these capabilities.
 */
export type KeyOrigin =
  /** The key arrives with the token, from the vendor's seed file, and belongs to the device. */
  | "imported"
  /** The key is made when the token is enrolled (mobile) or provisioned (email). */
  | "issued";

export interface TokenTypeDefinition {
  id: "mobile" | "hardware" | "email";
  /** Prefix of generated serials; null when serials come from a seed file. */
  serialPrefix: string | null;
  keyOrigin: KeyOrigin;
  /** Apps a token of this type may be enrolled into. */
  apps: ReadonlyArray<"tessera" | "otp-app">;
  otpModes: ReadonlyArray<"totp" | "hotp">;
}

function defineTokenType<T extends TokenTypeDefinition>(definition: T): T {
  return definition;
}

export const tokenTypes = {
  mobile: defineTokenType({ id: "mobile", serialPrefix: "MP", keyOrigin: "issued", apps: ["tessera", "otp-app"], otpModes: ["totp"] }),
  hardware: defineTokenType({ id: "hardware", serialPrefix: null, keyOrigin: "imported", apps: [], otpModes: ["totp", "hotp"] }),
  email: defineTokenType({ id: "email", serialPrefix: "EM", keyOrigin: "issued", apps: [], otpModes: ["hotp"] }),
} as const;

export type TokenType = keyof typeof tokenTypes;
export const tokenTypeIds = Object.keys(tokenTypes) as TokenType[];
/** Types whose serials Tessera generates (`tokens add`); hardware tokens are imported. */
export const generatedTokenTypes = ["mobile", "email"] as const;
export type GeneratedTokenType = (typeof generatedTokenTypes)[number];

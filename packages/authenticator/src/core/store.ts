/** A JSON Web Key as WebCrypto exports it (RFC 7517); EC P-256 here. */
export interface Jwk {
  kty?: string;
  crv?: string;
  x?: string;
  y?: string;
  d?: string;
  ext?: boolean;
  key_ops?: string[];
}

/** What the authenticator keeps: its device identity and its tokens. */
export interface StoredToken {
  serial: string;
  server: string;
  virtualServer: { id: string; name: string };
  userId: string;
  /** The OTP key as the vault sealed it (the CLI: base64; the web app: AES-GCM under a non-extractable key). Never sent anywhere. */
  key: string;
  algorithm: "SHA1" | "SHA256" | "SHA512";
  digits: 6 | 8;
  periodSeconds: number;
  enrolledAt: string;
}

export interface DeviceIdentity {
  /** Per server: the id the server gave this device. */
  deviceIds: Record<string, string>;
  /** The ECDSA P-256 key pair that signs device requests, as the vault keeps it (the CLI: JWK). */
  signingKey: { privateJwk: Jwk; publicJwk: Jwk } | null;
  autosendPasscode: boolean;
  /** Per server: the Web Push endpoint it was last given (absent: none), so a changed subscription is sent again. */
  webPushEndpoints?: Record<string, string>;
}

export interface AuthenticatorState {
  device: DeviceIdentity;
  tokens: StoredToken[];
}

/** Where state lives: a file with mode 0600 for the CLI, IndexedDB for the web app. */
export interface StateStore {
  load(): Promise<AuthenticatorState>;
  save(state: AuthenticatorState): Promise<void>;
}

export function emptyState(): AuthenticatorState {
  return { device: { deviceIds: {}, signingKey: null, autosendPasscode: true }, tokens: [] };
}

/**
 * Where keys live. The CLI keeps them in its 0600 file; the web app keeps non-extractable
 * WebCrypto keys in IndexedDB, where script can use them but never read them out.
 */
export interface KeyVault {
  /** The device's signing key, made on first use. */
  signingKey(state: AuthenticatorState): Promise<{ privateKey: CryptoKeyLike; publicRaw: string }>;
  sealOtpKey(key: Uint8Array): Promise<string>;
  openOtpKey(sealed: string): Promise<Uint8Array>;
}

/** WebCrypto's CryptoKey, without depending on DOM or Node type names. */
export type CryptoKeyLike = Awaited<ReturnType<typeof globalThis.crypto.subtle.importKey>>;

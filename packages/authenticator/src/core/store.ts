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
  /** The OTP key, base64. Never sent anywhere. */
  key: string;
  algorithm: "SHA1" | "SHA256" | "SHA512";
  digits: 6 | 8;
  periodSeconds: number;
  enrolledAt: string;
}

export interface DeviceIdentity {
  /** Per server: the id the server gave this device. */
  deviceIds: Record<string, string>;
  /** The ECDSA P-256 key pair that signs device requests, as JWK. */
  signingKey: { privateJwk: Jwk; publicJwk: Jwk } | null;
  autosendPasscode: boolean;
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

export { createAuthenticator, stateVault, AuthenticatorError, type Authenticator, type AppPlatform, type AuthenticatorOptions, type PushChallenge } from "./authenticator.js";
export { parseEnrollmentLink, type EnrollmentLink } from "./link.js";
export { emptyState, type AuthenticatorState, type CryptoKeyLike, type KeyVault, type StateStore, type StoredToken } from "./store.js";

import { decodeBase64url, encodeBase64url, exportPublicKey } from "@tessera/otp";
import { emptyState, type AuthenticatorState, type KeyVault, type StateStore } from "../../src/core/store.ts";
import { idbGet, idbPut, idbPutIfAbsent } from "./idb.ts";

/** The app's state in IndexedDB. It holds OTP keys only as the vault sealed them. */
export function indexedDbStateStore(): StateStore {
  return {
    async load(): Promise<AuthenticatorState> {
      return (await idbGet<AuthenticatorState>("state", "current")) ?? emptyState();
    },
    async save(state: AuthenticatorState): Promise<void> {
      await idbPut("state", "current", state);
    },
  };
}

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;
const SEALED_PREFIX = "aesgcm1.";

interface SigningPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

/**
 * Keys as non-extractable WebCrypto keys in IndexedDB (structured clone keeps CryptoKeys):
 * script can sign and decrypt with them but never read them out. The device's ECDSA
 * P-256 signing key signs requests; each OTP key is sealed with AES-GCM under one AES key.
 */
export function indexedDbKeyVault(): KeyVault {
  let signing: Promise<SigningPair> | null = null;
  let sealing: Promise<CryptoKey> | null = null;

  const signingPair = () =>
    (signing ??= (async () => {
      const kept = await idbGet<SigningPair>("keys", "signing");
      if (kept) return kept;
      // extractable false applies to the private key; a public key is always exportable.
      const made = await crypto.subtle.generateKey(ECDSA, false, ["sign", "verify"]);
      return idbPutIfAbsent<SigningPair>("keys", "signing", { privateKey: made.privateKey, publicKey: made.publicKey });
    })().catch((error: unknown) => {
      signing = null;
      throw error;
    }));

  const sealingKey = () =>
    (sealing ??= (async () => {
      const kept = await idbGet<CryptoKey>("keys", "sealing");
      if (kept) return kept;
      const made = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      return idbPutIfAbsent("keys", "sealing", made);
    })().catch((error: unknown) => {
      sealing = null;
      throw error;
    }));

  return {
    async signingKey() {
      const pair = await signingPair();
      return { privateKey: pair.privateKey, publicRaw: await exportPublicKey(pair.publicKey) };
    },
    async sealOtpKey(key: Uint8Array): Promise<string> {
      // A fresh 96-bit IV per sealing (NIST SP 800-38D section 8.2.2).
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, await sealingKey(), new Uint8Array(key));
      return `${SEALED_PREFIX}${encodeBase64url(iv)}.${encodeBase64url(new Uint8Array(sealed))}`;
    },
    async openOtpKey(sealed: string): Promise<Uint8Array> {
      const [iv, data] = sealed.startsWith(SEALED_PREFIX) ? sealed.slice(SEALED_PREFIX.length).split(".").map(decodeBase64url) : [];
      if (!iv || !data) throw new Error("this token's key is not readable on this device");
      return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, await sealingKey(), data));
    },
  };
}

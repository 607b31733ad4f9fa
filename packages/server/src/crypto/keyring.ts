import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pooledRandomBytes } from "../ids.js";

/**
 * Token keys at rest: AES-256-GCM under a master key. Each ciphertext is stored with
 * the id of the key that made it, so a new master key can take over while the old one
 * still decrypts, until `tessera keys rotate` has re-encrypted everything.
 * The token serial is the additional authenticated data: a ciphertext copied onto
 * another token's row fails to decrypt.
 */
export interface Keyring {
  currentKeyId: string;
  keyIds(): string[];
  encrypt(plaintext: Uint8Array, context: string): { ciphertext: string; keyId: string };
  decrypt(ciphertext: string, keyId: string, context: string): Buffer;
}

export class KeyringError extends Error {}

/**
 * What each kind of sealed value is bound to (the AAD): a ciphertext copied onto another
 * row, or another kind of row, does not decrypt. Sealing, opening and `keys rotate` use
 * these same functions (crypto/rotate.ts lists every sealed column).
 */
export const sealingContext = {
  tokenKey: (serial: string) => serial,
  radiusSecret: (applicationId: string) => `radius:${applicationId}`,
  queuedMail: (outboxId: string) => `outbox:${outboxId}`,
  serverSecret: (name: string) => `server-secret:${name}`,
};

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export function keyIdOf(key: Buffer): string {
  return createHash("sha256").update("tessera master key id\0").update(key).digest("hex").slice(0, 16);
}

export function parseMasterKey(text: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, "hex") : Buffer.from(trimmed, "base64");
  if (key.length !== KEY_BYTES) {
    throw new KeyringError("a master key must be 32 bytes, given as 64 hex digits or base64");
  }
  return key;
}

export function createKeyring(keys: Buffer[]): Keyring {
  if (keys.length === 0) throw new KeyringError("no master key");
  const byId = new Map(keys.map((key) => [keyIdOf(key), key]));
  const current = keys[0]!;
  const currentKeyId = keyIdOf(current);
  return {
    currentKeyId,
    keyIds: () => [...byId.keys()],
    encrypt(plaintext, context) {
      // GCM needs a nonce never repeated under one key: 96 random bits per encryption.
      const iv = pooledRandomBytes(IV_BYTES);
      const cipher = createCipheriv("aes-256-gcm", current, iv);
      cipher.setAAD(Buffer.from(context, "utf8"));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      return { ciphertext: Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64"), keyId: currentKeyId };
    },
    decrypt(ciphertext, keyId, context) {
      const key = byId.get(keyId);
      if (!key) throw new KeyringError(`master key ${keyId} is not available; set TESSERA_PREVIOUS_MASTER_KEYS`);
      const raw = Buffer.from(ciphertext, "base64");
      const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(context, "utf8"));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
    },
  };
}

interface KeyFile {
  /** Newest first: the first key encrypts, all decrypt. */
  keys: Array<{ id: string; key: string; createdAt: string }>;
}

function readKeyFile(file: string): KeyFile {
  const parsed = JSON.parse(readFileSync(file, "utf8")) as KeyFile;
  if (!Array.isArray(parsed.keys) || parsed.keys.length === 0) throw new KeyringError(`${file} holds no keys`);
  return parsed;
}

function writeKeyFile(file: string, content: KeyFile): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, JSON.stringify(content, null, 2) + "\n", { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, file);
}

export interface MasterKeySettings {
  fromEnvironment: string | undefined;
  previous: string[];
  keyFile: string;
}

/**
 * The master key comes from TESSERA_MASTER_KEY when set; otherwise from the key file in
 * the data directory, created with mode 0600 on first start.
 */
export function loadKeyring(settings: MasterKeySettings): Keyring {
  if (settings.fromEnvironment) {
    return createKeyring([parseMasterKey(settings.fromEnvironment), ...settings.previous.map(parseMasterKey)]);
  }
  if (!existsSync(settings.keyFile)) {
    const key = randomBytes(KEY_BYTES);
    writeKeyFile(settings.keyFile, {
      keys: [{ id: keyIdOf(key), key: key.toString("base64"), createdAt: new Date().toISOString() }],
    });
  }
  const previous = settings.previous.map(parseMasterKey);
  const read = () => {
    const file = readKeyFile(settings.keyFile);
    return { keyring: createKeyring([...file.keys.map((entry) => parseMasterKey(entry.key)), ...previous]), mtimeMs: statSync(settings.keyFile).mtimeMs };
  };
  // A rotation (`tessera keys rotate`, another process) rewrites the key file while
  // servers run: they take the new key for encryption as soon as the file changes, and
  // re-read it when they meet a key id they do not know.
  let loaded = read();
  const fresh = () => {
    if (statSync(settings.keyFile).mtimeMs !== loaded.mtimeMs) loaded = read();
    return loaded.keyring;
  };
  return {
    get currentKeyId() {
      return fresh().currentKeyId;
    },
    keyIds: () => fresh().keyIds(),
    encrypt: (plaintext, context) => fresh().encrypt(plaintext, context),
    decrypt(ciphertext, keyId, context) {
      if (!loaded.keyring.keyIds().includes(keyId)) loaded = read();
      return loaded.keyring.decrypt(ciphertext, keyId, context);
    },
  };
}

/** Adds a new newest key to the key file and returns the keyring that uses it. */
export function addKeyToKeyFile(settings: MasterKeySettings): Keyring {
  if (settings.fromEnvironment) {
    throw new KeyringError(
      "the master key comes from TESSERA_MASTER_KEY: set the new key there, the old one in TESSERA_PREVIOUS_MASTER_KEYS, then rotate",
    );
  }
  const file = existsSync(settings.keyFile) ? readKeyFile(settings.keyFile) : { keys: [] };
  const key = randomBytes(KEY_BYTES);
  file.keys.unshift({ id: keyIdOf(key), key: key.toString("base64"), createdAt: new Date().toISOString() });
  writeKeyFile(settings.keyFile, file);
  return loadKeyring(settings);
}

/**
 * Drops from the key file every key but the newest and those still named by `inUse`
 * (the key ids token rows carry). Run it once every node encrypts with the new key.
 */
export function pruneKeyFile(settings: MasterKeySettings, inUse: string[]): { removed: string[] } {
  if (settings.fromEnvironment || !existsSync(settings.keyFile)) return { removed: [] };
  const file = readKeyFile(settings.keyFile);
  const keep = file.keys.filter((entry, index) => index === 0 || inUse.includes(keyIdOf(parseMasterKey(entry.key))));
  writeKeyFile(settings.keyFile, { keys: keep });
  return { removed: file.keys.filter((entry) => !keep.includes(entry)).map((entry) => keyIdOf(parseMasterKey(entry.key))) };
}

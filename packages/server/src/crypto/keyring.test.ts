import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { addKeyToKeyFile, createKeyring, keyIdOf, KeyringError, loadKeyring, parseMasterKey, pruneKeyFile } from "./keyring.js";

const settings = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "tessera-keys-"));
  return { fromEnvironment: undefined, previous: [], keyFile: path.join(dir, "master.keys") };
};

describe("master keys and token keys at rest", () => {
  it("round-trips a key and binds it to its token", () => {
    const keyring = createKeyring([Buffer.alloc(32, 1)]);
    const secret = Buffer.from("12345678901234567890");
    const sealed = keyring.encrypt(secret, "MP0000000017");
    expect(sealed.ciphertext).not.toContain(secret.toString("base64"));
    expect(keyring.decrypt(sealed.ciphertext, sealed.keyId, "MP0000000017")).toEqual(secret);
    // The serial is authenticated data: the same ciphertext on another token fails.
    expect(() => keyring.decrypt(sealed.ciphertext, sealed.keyId, "MP0000000025")).toThrow();
  });

  it("never encrypts the same key to the same ciphertext twice", () => {
    const keyring = createKeyring([Buffer.alloc(32, 1)]);
    const a = keyring.encrypt(Buffer.alloc(20), "S");
    const b = keyring.encrypt(Buffer.alloc(20), "S");
    expect(a.ciphertext).not.toBe(b.ciphertext);
  });

  it("detects a tampered ciphertext", () => {
    const keyring = createKeyring([Buffer.alloc(32, 1)]);
    const sealed = keyring.encrypt(Buffer.alloc(20, 2), "S");
    const raw = Buffer.from(sealed.ciphertext, "base64");
    raw[raw.length - 1]! ^= 1;
    expect(() => keyring.decrypt(raw.toString("base64"), sealed.keyId, "S")).toThrow();
  });

  it("accepts a master key as 64 hex digits or base64 of 32 bytes, and nothing else", () => {
    expect(parseMasterKey("ab".repeat(32))).toHaveLength(32);
    expect(parseMasterKey(Buffer.alloc(32, 9).toString("base64"))).toHaveLength(32);
    expect(() => parseMasterKey("short")).toThrow(KeyringError);
  });

  it("creates the key file on first start with mode 0600 and reuses it", () => {
    const s = settings();
    const first = loadKeyring(s);
    expect(statSync(s.keyFile).mode & 0o777).toBe(0o600);
    expect(loadKeyring(s).currentKeyId).toBe(first.currentKeyId);
  });

  it("rotates: a new key encrypts, the old one still decrypts until pruned", () => {
    const s = settings();
    const old = loadKeyring(s);
    const oldId = old.currentKeyId;
    const sealed = old.encrypt(Buffer.alloc(20, 4), "S");
    const rotated = addKeyToKeyFile(s);
    expect(rotated.currentKeyId).not.toBe(oldId);
    expect(rotated.decrypt(sealed.ciphertext, sealed.keyId, "S")).toEqual(Buffer.alloc(20, 4));
    expect(pruneKeyFile(s, [oldId]).removed).toEqual([]);
    expect(pruneKeyFile(s, []).removed).toEqual([oldId]);
    expect(() => loadKeyring(s).decrypt(sealed.ciphertext, sealed.keyId, "S")).toThrow(KeyringError);
    expect(statSync(s.keyFile).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(s.keyFile, "utf8")).keys).toHaveLength(1);
  });

  it("follows a rotation made by another process while it runs", () => {
    const s = settings();
    const running = loadKeyring(s);
    const before = running.currentKeyId;
    const other = addKeyToKeyFile(s);
    const sealedElsewhere = other.encrypt(Buffer.alloc(20, 8), "S");
    expect(running.decrypt(sealedElsewhere.ciphertext, sealedElsewhere.keyId, "S")).toEqual(Buffer.alloc(20, 8));
    expect(running.currentKeyId).toBe(other.currentKeyId);
    expect(running.currentKeyId).not.toBe(before);
  });

  it("takes the key from the environment without writing a key file, previous keys decrypting", () => {
    const s = settings();
    const oldKey = Buffer.alloc(32, 5);
    const newKey = Buffer.alloc(32, 6);
    const sealed = createKeyring([oldKey]).encrypt(Buffer.alloc(20, 1), "S");
    const keyring = loadKeyring({ ...s, fromEnvironment: newKey.toString("hex"), previous: [oldKey.toString("base64")] });
    expect(keyring.currentKeyId).toBe(keyIdOf(newKey));
    expect(keyring.decrypt(sealed.ciphertext, sealed.keyId, "S")).toEqual(Buffer.alloc(20, 1));
    expect(existsSync(s.keyFile)).toBe(false);
    expect(() => addKeyToKeyFile({ ...s, fromEnvironment: newKey.toString("hex") })).toThrow(KeyringError);
  });
});

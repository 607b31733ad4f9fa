import { createDecipheriv, createHmac, timingSafeEqual } from "node:crypto";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import {
  DEFAULT_PERIOD_SECONDS,
  parseHashAlgorithm,
  parseNonNegativeInteger,
  parsePeriod,
  PERIOD_RANGE_TEXT,
  validateSecret,
  validateSerial,
  type HashAlgorithm,
  type ImportedSeed,
  type OtpMode,
  type SeedFileResult,
  type SeedProblem,
} from "./seed.js";

/**
 * PSKC, the Portable Symmetric Key Container of RFC 6030: the XML most hardware token
 * vendors ship seeds in. Plain values and pre-shared-key encryption (section 6.1) are
 * read; password-based (6.2) and public-key (6.3) encryption are refused with a reason.
 */

export interface PskcOptions {
  /** The transport key agreed with the vendor, for files encrypted as in RFC 6030 section 6.1. */
  preSharedKey?: Buffer;
}

/** A read that can fail: expected failures are values, carrying the text shown to the operator. */
type Read<T> = { ok: true; value: T } | { ok: false; problem: string };

function ok<T>(value: T): Read<T> {
  return { ok: true, value };
}

function no(problem: string): Read<never> {
  return { ok: false, problem };
}

// HOTP is the profile RFC 6030 defines itself (in its IANA algorithm registry, section 10);
// the TOTP URI comes from the PSKC algorithm profiles draft that token vendors follow.
// Maps, not object literals: a URI such as "constructor" must not find a prototype member.
const KEY_ALGORITHMS = new Map<string, OtpMode>([
  ["urn:ietf:params:xml:ns:keyprov:pskc:hotp", "hotp"],
  ["urn:ietf:params:xml:ns:keyprov:pskc:totp", "totp"],
]);

// XML Encryption 1.0 section 5.2 block ciphers, with the key length each needs.
const CBC_CIPHERS = new Map<string, { name: string; keyBytes: number }>([
  ["http://www.w3.org/2001/04/xmlenc#aes128-cbc", { name: "aes-128-cbc", keyBytes: 16 }],
  ["http://www.w3.org/2001/04/xmlenc#aes192-cbc", { name: "aes-192-cbc", keyBytes: 24 }],
  ["http://www.w3.org/2001/04/xmlenc#aes256-cbc", { name: "aes-256-cbc", keyBytes: 32 }],
]);

// RFC 6030 section 6.1.1: MACMethod names an XML Signature HMAC (RFC 3275, RFC 4051).
const MAC_HASHES = new Map<string, "sha1" | "sha256">([
  ["http://www.w3.org/2000/09/xmldsig#hmac-sha1", "sha1"],
  ["http://www.w3.org/2001/04/xmldsig-more#hmac-sha256", "sha256"],
]);

const AES_BLOCK_BYTES = 16;

interface ContainerKeys {
  preSharedKey?: Buffer;
  mac?: { hash: "sha1" | "sha256"; key: Buffer };
}

export function parsePskc(xml: string, options: PskcOptions = {}): SeedFileResult {
  const container = readContainer(xml);
  if (!container.ok) return { ok: false, problems: [{ problem: container.problem }] };
  const keys = readContainerKeys(container.value, options.preSharedKey);
  if (!keys.ok) return { ok: false, problems: [{ problem: keys.problem }] };
  const packages = elements(container.value, "KeyPackage");
  if (packages.length === 0) return { ok: false, problems: [{ problem: "the container has no KeyPackage" }] };

  const seeds: ImportedSeed[] = [];
  const problems: SeedProblem[] = [];
  const firstPackageOf = new Map<string, number>();
  packages.forEach((keyPackage, index) => {
    const number = index + 1;
    const read = readKeyPackage(keyPackage, keys.value);
    const where = (text: string): SeedProblem => {
      const problem = `key package ${number}: ${text}`;
      return read.serial === undefined ? { problem } : { serial: read.serial, problem };
    };
    problems.push(...read.problems.map(where));
    if (read.serial !== undefined) {
      const first = firstPackageOf.get(read.serial);
      if (first === undefined) firstPackageOf.set(read.serial, number);
      else problems.push(where(`serial ${read.serial} is also in key package ${first}`));
    }
    if (read.seed) seeds.push(read.seed);
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, seeds };
}

// ---- XML ----------------------------------------------------------------------------

/**
 * Namespace prefixes vary between vendors (pskc:, xenc:, ds: or a default namespace), so
 * they are dropped. Every element is read as an array, so a repeated element is seen and
 * refused rather than silently merged or overwritten.
 */
function readContainer(xml: string): Read<unknown> {
  // A byte order mark or blank lines before the declaration are common in exported files.
  const text = xml.replace(/^\uFEFF?\s*/, "");
  const valid = XMLValidator.validate(text);
  if (valid !== true) return no(`the file is not well-formed XML (line ${valid.err.line}): ${valid.err.msg}`);
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@_",
    removeNSPrefix: true,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    ignoreDeclaration: true,
    ignorePiTags: true,
    isArray: (_name, _path, _isLeaf, isAttribute) => !isAttribute,
  });
  let document: unknown;
  try {
    document = parser.parse(text);
  } catch (error) {
    // The validator passed, so this is a limit such as entity expansion: still the file's fault.
    return no(`the file cannot be read as XML: ${error instanceof Error ? error.message : String(error)}`);
  }
  const container = one(document, "KeyContainer");
  if (!container.ok) return container;
  return container.value === undefined ? no("the file is not a PSKC file: it has no KeyContainer element") : container;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function elements(node: unknown, name: string): unknown[] {
  if (!isRecord(node)) return [];
  const value = node[name];
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/** The element if present once, undefined if absent, a problem if repeated. */
function one(node: unknown, name: string): Read<unknown> {
  const found = elements(node, name);
  return found.length > 1 ? no(`${name} appears ${found.length} times`) : ok(found[0]);
}

/** Follows a path of single elements; undefined when any step is absent. */
function descend(node: unknown, path: string[]): Read<unknown> {
  let current: unknown = node;
  for (const name of path) {
    const next = one(current, name);
    if (!next.ok || next.value === undefined) return next;
    current = next.value;
  }
  return ok(current);
}

/** Text content: "" for an empty element or one with attributes only. */
function text(node: unknown): string {
  if (typeof node === "string") return node.trim();
  if (isRecord(node) && typeof node["#text"] === "string") return node["#text"].trim();
  return "";
}

function attribute(node: unknown, name: string): string | undefined {
  if (!isRecord(node)) return undefined;
  const value = node[`@_${name}`];
  return typeof value === "string" ? value.trim() : undefined;
}

function containsElement(node: unknown, name: string): boolean {
  if (Array.isArray(node)) return node.some((item) => containsElement(item, name));
  if (!isRecord(node)) return false;
  return Object.entries(node).some(([key, value]) => key === name || containsElement(value, name));
}

/** XML Schema base64Binary: whitespace allowed anywhere, otherwise strict (Buffer.from is not). */
function decodeBase64(value: string): Buffer | null {
  const compact = value.replace(/\s/g, "");
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return null;
  return Buffer.from(compact, "base64");
}

// ---- Container-wide keys (RFC 6030 section 6) ---------------------------------------

function readContainerKeys(container: unknown, preSharedKey: Buffer | undefined): Read<ContainerKeys> {
  const encryptionKey = one(container, "EncryptionKey");
  if (!encryptionKey.ok) return encryptionKey;
  if (elements(encryptionKey.value, "DerivedKey").length > 0) {
    return no("the file is encrypted with a password-derived key (RFC 6030 section 6.2), which is not supported; ask the vendor for a pre-shared key file (section 6.1)");
  }
  if (elements(encryptionKey.value, "X509Data").length > 0) {
    return no("the file is encrypted with a public key (RFC 6030 section 6.3), which is not supported; ask the vendor for a pre-shared key file (section 6.1)");
  }
  const macMethod = one(container, "MACMethod");
  if (!macMethod.ok) return macMethod;
  if (!containsElement(container, "EncryptedValue") && macMethod.value === undefined) return ok({});
  if (!preSharedKey) return no("the file is encrypted (RFC 6030 section 6.1): a pre-shared key is needed to read it");
  // RFC 6030 section 6.1.1: CBC has no integrity of its own, so encrypted values come
  // with a MAC. Without one, a wrong key passes the padding check one time in 256 and
  // would import a seed that never produces a right code.
  if (macMethod.value === undefined) return no("the file is encrypted but has no MACMethod (RFC 6030 section 6.1.1): its secrets cannot be checked");
  const mac = readMacKey(macMethod.value, preSharedKey);
  return mac.ok ? ok({ preSharedKey, mac: mac.value }) : mac;
}

/**
 * RFC 6030 section 6.1.1: AES-CBC has no integrity check, so the sender MACs each
 * encrypted value with a random MAC key, itself encrypted under the pre-shared key.
 */
function readMacKey(macMethod: unknown, preSharedKey: Buffer): Read<NonNullable<ContainerKeys["mac"]>> {
  const uri = attribute(macMethod, "Algorithm") ?? "";
  const hash = MAC_HASHES.get(uri);
  if (!hash) return no(`MACMethod algorithm "${uri}" is not supported: use HMAC-SHA1 or HMAC-SHA256`);
  const macKey = one(macMethod, "MACKey");
  if (!macKey.ok) return macKey;
  if (macKey.value === undefined) return no("MACMethod has no MACKey");
  const cipherValue = readCipherValue(macKey.value, preSharedKey);
  const decrypted = cipherValue.ok ? decrypt(cipherValue.value, preSharedKey) : cipherValue;
  if (!decrypted.ok) return no(`the MAC key cannot be decrypted: ${decrypted.problem}`);
  return ok({ hash, key: decrypted.value });
}

interface CipherValue {
  cipher: string;
  /** The raw bytes: the IV followed by the ciphertext, which is also what ValueMAC covers. */
  bytes: Buffer;
}

/**
 * XML Encryption (section 5.2.1 of the W3C recommendation, as RFC 6030 section 6.1 uses
 * it): CipherValue is the IV followed by the CBC ciphertext, padded as in PKCS#7.
 */
function readCipherValue(encrypted: unknown, key: Buffer): Read<CipherValue> {
  const method = one(encrypted, "EncryptionMethod");
  if (!method.ok) return method;
  const uri = attribute(method.value, "Algorithm") ?? "";
  const cipher = CBC_CIPHERS.get(uri);
  if (!cipher) return no(`encryption algorithm "${uri}" is not supported: use AES-CBC`);
  if (key.length !== cipher.keyBytes) {
    return no(`the pre-shared key is ${key.length} bytes but ${cipher.name} needs ${cipher.keyBytes}`);
  }
  const cipherText = descend(encrypted, ["CipherData", "CipherValue"]);
  if (!cipherText.ok) return cipherText;
  if (cipherText.value === undefined) return no("the encrypted value has no CipherData/CipherValue");
  const bytes = decodeBase64(text(cipherText.value));
  if (!bytes) return no("CipherValue is not base64");
  if (bytes.length < 2 * AES_BLOCK_BYTES || bytes.length % AES_BLOCK_BYTES !== 0) {
    return no("CipherValue is not an IV followed by whole AES blocks");
  }
  return ok({ cipher: cipher.name, bytes });
}

function decrypt(value: CipherValue, key: Buffer): Read<Buffer> {
  const plain = decryptCbc(value.cipher, key, value.bytes);
  return plain ? ok(plain) : no("decryption failed (bad padding): the pre-shared key is probably wrong");
}

/** Node reports a padding failure by throwing; here it is an expected outcome, so null. */
function decryptCbc(name: string, key: Buffer, cipherValue: Buffer): Buffer | null {
  try {
    const decipher = createDecipheriv(name, key, cipherValue.subarray(0, AES_BLOCK_BYTES));
    return Buffer.concat([decipher.update(cipherValue.subarray(AES_BLOCK_BYTES)), decipher.final()]);
  } catch {
    return null;
  }
}

// ---- Key packages (RFC 6030 section 4) ----------------------------------------------

interface KeyPackageRead {
  serial?: string;
  problems: string[];
  seed?: ImportedSeed;
}

function readKeyPackage(keyPackage: unknown, keys: ContainerKeys): KeyPackageRead {
  const problems: string[] = [];
  const take = <T>(read: Read<T>): T | undefined => {
    if (read.ok) return read.value;
    problems.push(read.problem);
    return undefined;
  };
  const serial = take(readSerial(keyPackage));
  const keyNode = one(keyPackage, "Key");
  if (!keyNode.ok || keyNode.value === undefined) {
    problems.push(keyNode.ok ? "it has no Key" : keyNode.problem);
    return { serial, problems };
  }
  const key = keyNode.value;
  const otpMode = take(readOtpMode(key));
  const digits = take(readDigits(key));
  const algorithm = take(readHashAlgorithm(key));
  const secret = take(readSecret(key, keys));
  const counter = otpMode === "hotp" ? take(readCounter(key)) : 0;
  const periodSeconds = otpMode === "totp" ? take(readPeriod(key)) : DEFAULT_PERIOD_SECONDS;
  if (
    serial === undefined ||
    otpMode === undefined ||
    digits === undefined ||
    algorithm === undefined ||
    secret === undefined ||
    counter === undefined ||
    periodSeconds === undefined
  ) {
    return { serial, problems };
  }
  return { serial, problems, seed: { serial, secret, otpMode, digits, periodSeconds, algorithm, counter } };
}

/** Section 4.3.1: the device's serial number is DeviceInfo/SerialNo. */
function readSerial(keyPackage: unknown): Read<string> {
  const node = descend(keyPackage, ["DeviceInfo", "SerialNo"]);
  if (!node.ok) return node;
  const serial = text(node.value);
  if (serial === "") return no("it has no serial number (DeviceInfo/SerialNo)");
  const problem = validateSerial(serial);
  return problem ? no(`serial "${serial}": ${problem}`) : ok(serial);
}

/** Section 4.3.2: the Key element's Algorithm attribute names the OTP algorithm by URI. */
function readOtpMode(key: unknown): Read<OtpMode> {
  const uri = attribute(key, "Algorithm");
  if (!uri) return no("the Key has no Algorithm");
  const mode = KEY_ALGORITHMS.get(uri);
  return mode ? ok(mode) : no(`key algorithm "${uri}" is not supported: only HOTP and TOTP`);
}

/**
 * Section 4.3.4: ResponseFormat gives the OTP's length and encoding. The HOTP profile
 * allows 6 to 9 decimal digits; Tessera verifies 6 or 8 only.
 */
function readDigits(key: unknown): Read<6 | 8> {
  const format = descend(key, ["AlgorithmParameters", "ResponseFormat"]);
  if (!format.ok) return format;
  // A wrong guess would make a token that never verifies, so a missing length is refused.
  if (format.value === undefined) return no("it has no AlgorithmParameters/ResponseFormat, so the number of digits is unknown");
  const encoding = attribute(format.value, "Encoding");
  if (encoding !== undefined && encoding !== "DECIMAL") return no(`response encoding "${encoding}" is not supported: only DECIMAL`);
  const length = attribute(format.value, "Length");
  if (length === "6") return ok(6);
  if (length === "8") return ok(8);
  return no(`the OTP length "${length ?? ""}" is not supported: only 6 or 8 digits`);
}

/**
 * Section 4.3.4: AlgorithmParameters/Suite carries algorithm-specific details; for HMAC
 * OTPs vendors put the hash there ("HMAC-SHA256"). Without one, HOTP and TOTP use SHA-1.
 */
function readHashAlgorithm(key: unknown): Read<HashAlgorithm> {
  const suite = descend(key, ["AlgorithmParameters", "Suite"]);
  if (!suite.ok) return suite;
  const name = text(suite.value);
  if (name === "") return ok("SHA1");
  const algorithm = parseHashAlgorithm(name);
  return algorithm ? ok(algorithm) : no(`hash algorithm "${name}" is not supported: only SHA1, SHA256 or SHA512`);
}

/** Section 4.3.3 (Data/Secret) with section 6.1 for encrypted values. */
function readSecret(key: unknown, keys: ContainerKeys): Read<Buffer> {
  const secretNode = descend(key, ["Data", "Secret"]);
  if (!secretNode.ok) return secretNode;
  if (secretNode.value === undefined) return no("it has no secret (Data/Secret)");
  const plain = one(secretNode.value, "PlainValue");
  if (!plain.ok) return plain;
  const encrypted = one(secretNode.value, "EncryptedValue");
  if (!encrypted.ok) return encrypted;
  if (plain.value !== undefined && encrypted.value !== undefined) return no("the secret has both a PlainValue and an EncryptedValue");
  let secret: Read<Buffer>;
  if (plain.value !== undefined) secret = readPlainSecret(plain.value);
  else if (encrypted.value !== undefined) secret = readEncryptedSecret(secretNode.value, encrypted.value, keys);
  else return no("it has no secret (Data/Secret has no PlainValue or EncryptedValue)");
  if (!secret.ok) return secret;
  const problem = validateSecret(secret.value);
  return problem ? no(problem) : secret;
}

function readPlainSecret(plainValue: unknown): Read<Buffer> {
  const secret = decodeBase64(text(plainValue));
  return secret ? ok(secret) : no("the secret's PlainValue is not base64");
}

function readEncryptedSecret(secretNode: unknown, encryptedValue: unknown, keys: ContainerKeys): Read<Buffer> {
  if (!keys.preSharedKey) return no("the secret is encrypted: a pre-shared key is needed");
  const valueMac = one(secretNode, "ValueMAC");
  if (!valueMac.ok) return valueMac;
  if (keys.mac && valueMac.value === undefined) return no("the encrypted secret has no ValueMAC although the container has a MACMethod");
  if (!keys.mac && valueMac.value !== undefined) return no("the secret has a ValueMAC but the container has no MACMethod to check it with");
  const cipherValue = readCipherValue(encryptedValue, keys.preSharedKey);
  if (!cipherValue.ok) return cipherValue;
  // Encrypt-then-MAC: the MAC is checked before anything is decrypted.
  if (keys.mac) {
    const macProblem = checkValueMac(text(valueMac.value), cipherValue.value.bytes, keys.mac);
    if (macProblem) return no(macProblem);
  }
  return decrypt(cipherValue.value, keys.preSharedKey);
}

/** Section 6.1.1: ValueMAC = HMAC(MAC key, CipherValue bytes); returns a problem or null. */
function checkValueMac(valueMacText: string, cipherValue: Buffer, mac: NonNullable<ContainerKeys["mac"]>): string | null {
  const expected = decodeBase64(valueMacText);
  if (!expected) return "ValueMAC is not base64";
  const actual = createHmac(mac.hash, mac.key).update(cipherValue).digest();
  const matches = expected.length === actual.length && timingSafeEqual(expected, actual);
  return matches ? null : "ValueMAC does not match: the pre-shared key is wrong or the file was altered";
}

/** Section 4.3.3: Data/Counter, the HOTP moving factor; 0 when absent. */
function readCounter(key: unknown): Read<number> {
  const counter = descend(key, ["Data", "Counter"]);
  if (!counter.ok) return counter;
  if (counter.value === undefined) return ok(0);
  if (elements(counter.value, "EncryptedValue").length > 0) return no("an encrypted Counter is not supported");
  const value = descend(counter.value, ["PlainValue"]);
  if (!value.ok) return value;
  const parsed = parseNonNegativeInteger(text(value.value));
  return parsed === null ? no(`the counter "${text(value.value)}" is not a non-negative integer`) : ok(parsed);
}

/** Section 4.3.3: Data/TimeInterval, the TOTP time step in seconds; 30 when absent. */
function readPeriod(key: unknown): Read<number> {
  const interval = descend(key, ["Data", "TimeInterval"]);
  if (!interval.ok) return interval;
  if (interval.value === undefined) return ok(DEFAULT_PERIOD_SECONDS);
  if (elements(interval.value, "EncryptedValue").length > 0) return no("an encrypted TimeInterval is not supported");
  const value = descend(interval.value, ["PlainValue"]);
  if (!value.ok) return value;
  const parsed = parsePeriod(text(value.value));
  return parsed === null ? no(`the time interval "${text(value.value)}" is not ${PERIOD_RANGE_TEXT}`) : ok(parsed);
}

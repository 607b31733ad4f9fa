import { createCipheriv, createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parsePskc } from "./pskc.js";
import type { SeedFileResult, SeedProblem } from "./seed.js";

// RFC 6030 section 4, Figure 2: the basic container. It has no serial, no OTP length
// and a 32-bit secret ("1234"), so Tessera must refuse it.
const RFC6030_FIGURE_2 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    Id="exampleID1"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
    <KeyPackage>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer-A</Issuer>
            <Data>
                <Secret>
                    <PlainValue>MTIzNA==
                    </PlainValue>
                </Secret>
            </Data>
        </Key>
    </KeyPackage>
</KeyContainer>`;

// RFC 6030 section 4.1, Figure 3: a non-encrypted HOTP secret key with a device serial.
const RFC6030_FIGURE_3 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    Id="exampleID1"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
    <KeyPackage>
        <DeviceInfo>
            <Manufacturer>Manufacturer</Manufacturer>
            <SerialNo>987654321</SerialNo>
            <UserId>DC=example-bank,DC=net</UserId>
        </DeviceInfo>
        <CryptoModuleInfo>
            <Id>CM_ID_001</Id>
        </CryptoModuleInfo>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer</Issuer>
            <AlgorithmParameters>
                <ResponseFormat Length="8" Encoding="DECIMAL"/>
            </AlgorithmParameters>
            <Data>
                <Secret>
                    <PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=
                    </PlainValue>
                </Secret>
                <Counter>
                    <PlainValue>0</PlainValue>
                </Counter>
            </Data>
            <UserId>UID=jsmith,DC=example-bank,DC=net</UserId>
        </Key>
    </KeyPackage>
</KeyContainer>`;

// RFC 6030 section 6.1, Figure 5: AES-128-CBC under a pre-shared key, HMAC-SHA1 ValueMAC.
const RFC6030_FIGURE_5 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
    <EncryptionKey>
        <ds:KeyName>Pre-shared-key</ds:KeyName>
    </EncryptionKey>
    <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
        <MACKey>
            <xenc:EncryptionMethod
            Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
                <xenc:CipherValue>
    ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX
                </xenc:CipherValue>
            </xenc:CipherData>
        </MACKey>
    </MACMethod>
    <KeyPackage>
        <DeviceInfo>
            <Manufacturer>Manufacturer</Manufacturer>
            <SerialNo>987654321</SerialNo>
        </DeviceInfo>
        <CryptoModuleInfo>
            <Id>CM_ID_001</Id>
        </CryptoModuleInfo>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer</Issuer>
            <AlgorithmParameters>
                <ResponseFormat Length="8" Encoding="DECIMAL"/>
            </AlgorithmParameters>
            <Data>
                <Secret>
                    <EncryptedValue>
                        <xenc:EncryptionMethod
            Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
                        <xenc:CipherData>
                            <xenc:CipherValue>
    AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv
                            </xenc:CipherValue>
                        </xenc:CipherData>
                    </EncryptedValue>
                    <ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=
                    </ValueMAC>
                </Secret>
                <Counter>
                    <PlainValue>0</PlainValue>
                </Counter>
            </Data>
        </Key>
    </KeyPackage>
</KeyContainer>`;

const RFC_PRE_SHARED_KEY = Buffer.from("12345678901234567890123456789012", "hex");
const RFC_SECRET = Buffer.from("3132333435363738393031323334353637383930", "hex");
const SECRET_20 = Buffer.from("12345678901234567890");

const HOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp";
const TOTP = "urn:ietf:params:xml:ns:keyprov:pskc:totp";

interface PackageSpec {
  serial?: string;
  algorithm?: string;
  /** Inner XML of AlgorithmParameters; "" leaves the element out. */
  parameters?: string;
  /** Inner XML of Data. */
  data?: string;
}

function plainSecret(secret: Buffer): string {
  return `<Secret><PlainValue>${secret.toString("base64")}</PlainValue></Secret>`;
}

function keyPackage(spec: PackageSpec): string {
  const serial = spec.serial === undefined ? "" : `<DeviceInfo><SerialNo>${spec.serial}</SerialNo></DeviceInfo>`;
  const parameters = spec.parameters ?? `<ResponseFormat Length="6" Encoding="DECIMAL"/>`;
  return `<KeyPackage>${serial}
    <Key Id="k" Algorithm="${spec.algorithm ?? HOTP}">
      ${parameters === "" ? "" : `<AlgorithmParameters>${parameters}</AlgorithmParameters>`}
      <Data>${spec.data ?? plainSecret(SECRET_20)}</Data>
    </Key>
  </KeyPackage>`;
}

function container(...packages: string[]): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">${packages.join("\n")}</KeyContainer>`;
}

/** RFC 6030 section 6.1: IV || AES-CBC(key, value) with PKCS#7 padding, as base64. */
function encrypt(key: Buffer, value: Buffer, iv = randomBytes(16)): Buffer {
  const cipher = createCipheriv(`aes-${key.length * 8}-cbc`, key, iv);
  return Buffer.concat([iv, cipher.update(value), cipher.final()]);
}

interface EncryptedSpec {
  preSharedKey: Buffer;
  macKey?: Buffer;
  packages: Array<{ serial: string; secret: Buffer; tamperMac?: boolean }>;
}

/** An encrypted container in the prefixed style (pskc:, xenc:, ds:) many vendors emit. */
function encryptedContainer(spec: EncryptedSpec): string {
  const bits = spec.preSharedKey.length * 8;
  const method = `<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes${bits}-cbc"/>`;
  const macMethod = spec.macKey
    ? `<pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><pskc:MACKey>${method}
        <xenc:CipherData><xenc:CipherValue>${encrypt(spec.preSharedKey, spec.macKey).toString("base64")}</xenc:CipherValue></xenc:CipherData>
      </pskc:MACKey></pskc:MACMethod>`
    : "";
  const packages = spec.packages.map(({ serial, secret, tamperMac }) => {
    const cipherValue = encrypt(spec.preSharedKey, secret);
    const mac = spec.macKey ? createHmac("sha1", spec.macKey).update(cipherValue).digest() : undefined;
    if (mac && tamperMac) mac[0] = (mac[0] ?? 0) ^ 1;
    return `<pskc:KeyPackage>
      <pskc:DeviceInfo><pskc:SerialNo>${serial}</pskc:SerialNo></pskc:DeviceInfo>
      <pskc:Key Id="${serial}" Algorithm="${HOTP}">
        <pskc:AlgorithmParameters><pskc:ResponseFormat Length="6" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
        <pskc:Data><pskc:Secret>
          <pskc:EncryptedValue>${method}
            <xenc:CipherData><xenc:CipherValue>${cipherValue.toString("base64")}</xenc:CipherValue></xenc:CipherData>
          </pskc:EncryptedValue>
          ${mac ? `<pskc:ValueMAC>${mac.toString("base64")}</pskc:ValueMAC>` : ""}
        </pskc:Secret></pskc:Data>
      </pskc:Key>
    </pskc:KeyPackage>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
  <pskc:EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></pskc:EncryptionKey>
  ${macMethod}
  ${packages.join("\n")}
</pskc:KeyContainer>`;
}

function problemsOf(result: SeedFileResult): SeedProblem[] {
  if (result.ok) throw new Error(`expected problems, got ${result.seeds.length} seeds`);
  return result.problems;
}

function seedsOf(result: SeedFileResult) {
  if (!result.ok) throw new Error(`expected seeds, got ${JSON.stringify(result.problems)}`);
  return result.seeds;
}

describe("parsePskc: RFC 6030 examples", () => {
  it("reads the plain HOTP key of Figure 3", () => {
    expect(seedsOf(parsePskc(RFC6030_FIGURE_3))).toEqual([
      { serial: "987654321", secret: RFC_SECRET, otpMode: "hotp", digits: 8, periodSeconds: 30, algorithm: "SHA1", counter: 0 },
    ]);
  });

  it("decrypts Figure 5 with the pre-shared key and checks its ValueMAC", () => {
    expect(seedsOf(parsePskc(RFC6030_FIGURE_5, { preSharedKey: RFC_PRE_SHARED_KEY }))).toEqual([
      { serial: "987654321", secret: RFC_SECRET, otpMode: "hotp", digits: 8, periodSeconds: 30, algorithm: "SHA1", counter: 0 },
    ]);
  });

  it("refuses Figure 2, which has no serial, no OTP length and a 32-bit secret", () => {
    expect(problemsOf(parsePskc(RFC6030_FIGURE_2))).toEqual([
      { problem: "key package 1: it has no serial number (DeviceInfo/SerialNo)" },
      { problem: "key package 1: it has no AlgorithmParameters/ResponseFormat, so the number of digits is unknown" },
      { problem: expect.stringMatching(/^key package 1: the secret is 32 bits; at least 128/) },
    ]);
  });

  it("asks for a pre-shared key when Figure 5 is read without one", () => {
    expect(problemsOf(parsePskc(RFC6030_FIGURE_5))).toEqual([{ problem: expect.stringContaining("a pre-shared key is needed") }]);
  });

  it("reports a wrong pre-shared key for Figure 5 as a problem", () => {
    const result = parsePskc(RFC6030_FIGURE_5, { preSharedKey: Buffer.alloc(16, 7) });
    expect(problemsOf(result)).toHaveLength(1);
    expect(problemsOf(result)[0]?.problem).toMatch(/wrong|does not match/);
  });

  it("refuses Figure 5 when a CipherValue byte was changed, because the ValueMAC no longer matches", () => {
    const tampered = RFC6030_FIGURE_5.replace("AAECAwQFBgcICQoLDA0OD+cI", "AAECAwQFBgcICQoLDA0OD+cJ");
    expect(problemsOf(parsePskc(tampered, { preSharedKey: RFC_PRE_SHARED_KEY }))).toEqual([
      { serial: "987654321", problem: "key package 1: ValueMAC does not match: the pre-shared key is wrong or the file was altered" },
    ]);
  });

  it("refuses Figure 5 when its ValueMAC was changed", () => {
    const tampered = RFC6030_FIGURE_5.replace("Su+NvtQfmvfJzF6bmQiJqoLRExc=", "Tu+NvtQfmvfJzF6bmQiJqoLRExc=");
    expect(problemsOf(parsePskc(tampered, { preSharedKey: RFC_PRE_SHARED_KEY }))[0]?.problem).toContain("ValueMAC does not match");
  });

  it("refuses a pre-shared key of the wrong length for AES-128", () => {
    const result = parsePskc(RFC6030_FIGURE_5, { preSharedKey: Buffer.alloc(32, 1) });
    expect(problemsOf(result)).toEqual([{ problem: expect.stringContaining("the pre-shared key is 32 bytes but aes-128-cbc needs 16") }]);
  });
});

describe("parsePskc: encrypted containers (RFC 6030 section 6.1)", () => {
  const preSharedKey = randomBytes(16);
  const macKey = randomBytes(20);
  const secrets = [randomBytes(20), randomBytes(32)];

  it("round-trips secrets encrypted with AES-128-CBC and MACed with HMAC-SHA1", () => {
    const xml = encryptedContainer({
      preSharedKey,
      macKey,
      packages: [
        { serial: "TOK-1", secret: secrets[0]! },
        { serial: "TOK-2", secret: secrets[1]! },
      ],
    });
    const seeds = seedsOf(parsePskc(xml, { preSharedKey }));
    expect(seeds.map((seed) => [seed.serial, seed.secret])).toEqual([
      ["TOK-1", secrets[0]],
      ["TOK-2", secrets[1]],
    ]);
  });

  it("round-trips AES-256-CBC", () => {
    const key256 = randomBytes(32);
    const xml = encryptedContainer({ preSharedKey: key256, macKey, packages: [{ serial: "TOK-1", secret: secrets[0]! }] });
    expect(seedsOf(parsePskc(xml, { preSharedKey: key256 }))[0]?.secret).toEqual(secrets[0]);
  });

  it("refuses encrypted values without a MACMethod, since a wrong key could pass the padding check", () => {
    const xml = encryptedContainer({ preSharedKey, packages: [{ serial: "TOK-1", secret: secrets[0]! }] });
    expect(problemsOf(parsePskc(xml, { preSharedKey }))[0]?.problem).toContain("no MACMethod");
  });

  it("reports a wrong key as problems, never as an exception", () => {
    const xml = encryptedContainer({
      preSharedKey,
      macKey,
      packages: [
        { serial: "TOK-1", secret: secrets[0]! },
        { serial: "TOK-2", secret: secrets[1]! },
      ],
    });
    // A wrong key can pass the padding check by chance; then the MAC check must refuse.
    for (let attempt = 0; attempt < 20; attempt++) {
      const problems = problemsOf(parsePskc(xml, { preSharedKey: randomBytes(16) }));
      expect(problems.length).toBeGreaterThan(0);
      for (const { problem } of problems) expect(problem).toMatch(/wrong|does not match/);
    }
  });

  it("refuses only the key package whose ValueMAC was tampered with, naming it", () => {
    const xml = encryptedContainer({
      preSharedKey,
      macKey,
      packages: [
        { serial: "TOK-1", secret: secrets[0]! },
        { serial: "TOK-2", secret: secrets[1]!, tamperMac: true },
      ],
    });
    expect(problemsOf(parsePskc(xml, { preSharedKey }))).toEqual([
      { serial: "TOK-2", problem: "key package 2: ValueMAC does not match: the pre-shared key is wrong or the file was altered" },
    ]);
  });

  it("refuses a secret with a ValueMAC when the container has no MACMethod", () => {
    const withMac = encryptedContainer({ preSharedKey, macKey, packages: [{ serial: "TOK-1", secret: secrets[0]! }] });
    const withoutMacMethod = withMac.replace(/<pskc:MACMethod[\s\S]*<\/pskc:MACMethod>/, "");
    expect(problemsOf(parsePskc(withoutMacMethod, { preSharedKey }))[0]?.problem).toContain("no MACMethod");
  });

  it("refuses an encrypted secret without a ValueMAC when the container has a MACMethod", () => {
    const withMac = encryptedContainer({ preSharedKey, macKey, packages: [{ serial: "TOK-1", secret: secrets[0]! }] });
    const withoutValueMac = withMac.replace(/<pskc:ValueMAC>[^<]*<\/pskc:ValueMAC>/, "");
    expect(problemsOf(parsePskc(withoutValueMac, { preSharedKey }))[0]?.problem).toContain("has no ValueMAC");
  });

  it("refuses password-based encryption (RFC 6030 section 6.2) with a reason", () => {
    const xml = container(keyPackage({ serial: "A1" })).replace(
      "<KeyPackage>",
      `<EncryptionKey><DerivedKey><KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2"/></DerivedKey></EncryptionKey><KeyPackage>`,
    );
    expect(problemsOf(parsePskc(xml, { preSharedKey }))).toEqual([{ problem: expect.stringContaining("section 6.2") }]);
  });

  it("refuses an unsupported encryption algorithm", () => {
    const xml = encryptedContainer({ preSharedKey, macKey, packages: [{ serial: "TOK-1", secret: secrets[0]! }] }).replace(
      "xmlenc#aes128-cbc",
      "xmlenc#tripledes-cbc",
    );
    expect(problemsOf(parsePskc(xml, { preSharedKey }))[0]?.problem).toContain('encryption algorithm "http://www.w3.org/2001/04/xmlenc#tripledes-cbc"');
  });
});

describe("parsePskc: key packages", () => {
  it("reads a TOTP key with a 60-second TimeInterval and 6 digits, ignoring Time", () => {
    const xml = container(
      keyPackage({
        serial: "TOTP-60",
        algorithm: TOTP,
        data: `${plainSecret(SECRET_20)}<Time><PlainValue>0</PlainValue></Time><TimeInterval><PlainValue>60</PlainValue></TimeInterval>`,
      }),
    );
    expect(seedsOf(parsePskc(xml))).toEqual([
      { serial: "TOTP-60", secret: SECRET_20, otpMode: "totp", digits: 6, periodSeconds: 60, algorithm: "SHA1", counter: 0 },
    ]);
  });

  it("defaults a TOTP key without TimeInterval to 30 seconds", () => {
    expect(seedsOf(parsePskc(container(keyPackage({ serial: "T1", algorithm: TOTP }))))[0]?.periodSeconds).toBe(30);
  });

  it("reads several key packages in file order, with their counters", () => {
    const xml = container(
      keyPackage({ serial: "H1", data: `${plainSecret(SECRET_20)}<Counter><PlainValue>42</PlainValue></Counter>` }),
      keyPackage({ serial: "H2" }),
      keyPackage({ serial: "T3", algorithm: TOTP }),
    );
    expect(seedsOf(parsePskc(xml)).map(({ serial, otpMode, counter }) => ({ serial, otpMode, counter }))).toEqual([
      { serial: "H1", otpMode: "hotp", counter: 42 },
      { serial: "H2", otpMode: "hotp", counter: 0 },
      { serial: "T3", otpMode: "totp", counter: 0 },
    ]);
  });

  it("reads Figure 3 written with a pskc: prefix instead of a default namespace", () => {
    const prefixed = RFC6030_FIGURE_3.replace(/<(\/?)([A-Z]\w*)/g, "<$1pskc:$2").replace('xmlns="', 'xmlns:pskc="');
    expect(seedsOf(parsePskc(prefixed))[0]?.serial).toBe("987654321");
  });

  it("takes the hash from AlgorithmParameters/Suite", () => {
    const xml = container(
      keyPackage({ serial: "S256", parameters: `<Suite>HMAC-SHA256</Suite><ResponseFormat Length="6"/>` }),
      keyPackage({ serial: "S512", parameters: `<Suite>SHA512</Suite><ResponseFormat Length="6"/>` }),
    );
    expect(seedsOf(parsePskc(xml)).map((seed) => seed.algorithm)).toEqual(["SHA256", "SHA512"]);
  });

  it("refuses a Suite naming an unsupported hash", () => {
    const xml = container(keyPackage({ serial: "S1", parameters: `<Suite>HMAC-MD5</Suite><ResponseFormat Length="6"/>` }));
    expect(problemsOf(parsePskc(xml))).toEqual([{ serial: "S1", problem: expect.stringContaining('hash algorithm "HMAC-MD5"') }]);
  });

  it("refuses a key algorithm named like an object member", () => {
    expect(problemsOf(parsePskc(container(keyPackage({ serial: "P1", algorithm: "constructor" }))))[0]?.problem).toContain(
      'key algorithm "constructor" is not supported',
    );
  });

  it("refuses a key algorithm other than HOTP or TOTP, naming the package and serial", () => {
    const xml = container(keyPackage({ serial: "A1" }), keyPackage({ serial: "OCRA-1", algorithm: "urn:ietf:params:xml:ns:keyprov:pskc:ocra" }));
    expect(problemsOf(parsePskc(xml))).toEqual([
      { serial: "OCRA-1", problem: 'key package 2: key algorithm "urn:ietf:params:xml:ns:keyprov:pskc:ocra" is not supported: only HOTP and TOTP' },
    ]);
  });

  it.each([["7"], ["10"], [""]])("refuses an OTP length of %j", (length) => {
    const xml = container(keyPackage({ serial: "D1", parameters: `<ResponseFormat Length="${length}" Encoding="DECIMAL"/>` }));
    expect(problemsOf(parsePskc(xml))[0]?.problem).toContain("only 6 or 8 digits");
  });

  it("refuses a key without ResponseFormat, as the digit count would be a guess", () => {
    expect(problemsOf(parsePskc(container(keyPackage({ serial: "D1", parameters: "" }))))[0]?.problem).toContain("number of digits is unknown");
  });

  it("refuses a non-decimal response encoding", () => {
    const xml = container(keyPackage({ serial: "D1", parameters: `<ResponseFormat Length="6" Encoding="HEXADECIMAL"/>` }));
    expect(problemsOf(parsePskc(xml))[0]?.problem).toContain('response encoding "HEXADECIMAL"');
  });

  it("refuses a key package without a serial", () => {
    expect(problemsOf(parsePskc(container(keyPackage({}))))).toEqual([{ problem: "key package 1: it has no serial number (DeviceInfo/SerialNo)" }]);
  });

  it("refuses a key package without a secret", () => {
    expect(problemsOf(parsePskc(container(keyPackage({ serial: "N1", data: "<Counter><PlainValue>0</PlainValue></Counter>" }))))).toEqual([
      { serial: "N1", problem: "key package 1: it has no secret (Data/Secret)" },
    ]);
  });

  it("refuses an empty secret", () => {
    expect(problemsOf(parsePskc(container(keyPackage({ serial: "E1", data: "<Secret><PlainValue></PlainValue></Secret>" }))))).toEqual([
      { serial: "E1", problem: "key package 1: the secret is empty" },
    ]);
  });

  it("refuses a secret shorter than 128 bits", () => {
    const xml = container(keyPackage({ serial: "S1", data: plainSecret(Buffer.alloc(15, 1)) }));
    expect(problemsOf(parsePskc(xml))).toEqual([
      { serial: "S1", problem: "key package 1: the secret is 120 bits; at least 128 are required (RFC 4226 section 4)" },
    ]);
  });

  it("accepts a secret of exactly 128 bits", () => {
    expect(seedsOf(parsePskc(container(keyPackage({ serial: "S1", data: plainSecret(Buffer.alloc(16, 1)) }))))).toHaveLength(1);
  });

  it("refuses a PlainValue that is not base64", () => {
    const xml = container(keyPackage({ serial: "B1", data: "<Secret><PlainValue>not*base64!</PlainValue></Secret>" }));
    expect(problemsOf(parsePskc(xml))[0]?.problem).toContain("not base64");
  });

  it("refuses duplicate serials, naming both key packages", () => {
    const xml = container(keyPackage({ serial: "DUP" }), keyPackage({ serial: "OTHER" }), keyPackage({ serial: "DUP" }));
    expect(problemsOf(parsePskc(xml))).toEqual([{ serial: "DUP", problem: "key package 3: serial DUP is also in key package 1" }]);
  });

  it("refuses serials that are not valid hardware serials", () => {
    const xml = container(keyPackage({ serial: "has space" }), keyPackage({ serial: "-dash" }), keyPackage({ serial: "x".repeat(65) }));
    const problems = problemsOf(parsePskc(xml));
    expect(problems.map((p) => p.problem.slice(0, 14))).toEqual(["key package 1:", "key package 2:", "key package 3:"]);
    for (const { problem } of problems) expect(problem).toContain("1 to 64 letters");
  });

  it.each([["MP0000000017"], ["EM12"]])("refuses %s, which is reserved for generated serials", (serial) => {
    expect(problemsOf(parsePskc(container(keyPackage({ serial })))))
      .toEqual([{ problem: expect.stringContaining("reserved for generated serials") }]);
  });

  it("refuses a negative or non-numeric counter", () => {
    const xml = container(
      keyPackage({ serial: "C1", data: `${plainSecret(SECRET_20)}<Counter><PlainValue>-1</PlainValue></Counter>` }),
      keyPackage({ serial: "C2", data: `${plainSecret(SECRET_20)}<Counter><PlainValue>ten</PlainValue></Counter>` }),
    );
    expect(problemsOf(parsePskc(xml))).toHaveLength(2);
  });

  it("refuses a TOTP time interval outside 10 to 300 seconds", () => {
    const xml = container(
      keyPackage({ serial: "T1", algorithm: TOTP, data: `${plainSecret(SECRET_20)}<TimeInterval><PlainValue>5</PlainValue></TimeInterval>` }),
    );
    expect(problemsOf(parsePskc(xml))[0]?.problem).toContain('the time interval "5" is not 10 to 300 seconds');
  });

  it("refuses a repeated element rather than choosing one", () => {
    const xml = container(keyPackage({ serial: "R1", data: `${plainSecret(SECRET_20)}${plainSecret(Buffer.alloc(20, 2))}` }));
    expect(problemsOf(parsePskc(xml))[0]?.problem).toContain("Secret appears 2 times");
  });

  it("lists every problem in the file, not only the first", () => {
    const xml = container(keyPackage({ serial: "OK-1" }), keyPackage({}), keyPackage({ serial: "S2", data: plainSecret(Buffer.alloc(4)) }));
    expect(problemsOf(parsePskc(xml)).map((p) => p.problem.slice(0, 13))).toEqual(["key package 2", "key package 3"]);
  });
});

describe("parsePskc: files that are not PSKC", () => {
  it("reports malformed XML as one problem", () => {
    const problems = problemsOf(parsePskc("<KeyContainer><KeyPackage></KeyContainer>"));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.problem).toContain("not well-formed XML");
  });

  it("reports a document without KeyContainer as one problem", () => {
    expect(problemsOf(parsePskc("<?xml version='1.0'?><Tokens><Token/></Tokens>"))).toEqual([
      { problem: "the file is not a PSKC file: it has no KeyContainer element" },
    ]);
  });

  it("reports an empty container", () => {
    expect(problemsOf(parsePskc(container()))).toEqual([{ problem: "the container has no KeyPackage" }]);
  });

  it.each([[""], ["not xml at all"], ["{\"json\": true}"], ["<a>&bogus;</a>"], ["\u0000\u0001"]])("returns problems for %j without throwing", (input) => {
    expect(parsePskc(input).ok).toBe(false);
  });

  it("accepts a byte order mark and blank lines before the declaration", () => {
    expect(seedsOf(parsePskc(`\uFEFF\n\n${RFC6030_FIGURE_3}`))).toHaveLength(1);
  });
});

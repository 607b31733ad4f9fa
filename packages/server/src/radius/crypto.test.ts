import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Attribute, Code } from "./attributes.js";
import { decodePacket, encodePacket } from "./codec.js";
import { decryptUserPassword, encryptUserPassword, responseAuthenticator, signResponse, verifyRequestMessageAuthenticator, verifyResponse } from "./crypto.js";
import { accessRequest } from "./testing.js";

// RFC 2865 section 7.1: secret "xyzzy5461", user "nemo", password "arctangent".
const SECRET = Buffer.from("xyzzy5461");
const REQUEST_AUTHENTICATOR = Buffer.from("0f403f9473978057bd83d5cb98f4227a", "hex");
const HIDDEN_ARCTANGENT = "0dbe708d93d413ce3196e43f782a0aee";
// The RFC's Access-Accept (Service-Type Login, Login-Service Telnet, Login-IP-Host 192.168.1.3).
const RFC_2865_7_1_ACCEPT = Buffer.from("02000026" + "86fe220e7624ba2a1005f6bf9b55e0b2" + "060600000001" + "0f0600000000" + "0e06c0a80103", "hex");

describe("PAP User-Password (RFC 2865 section 5.2)", () => {
  it("hides 'arctangent' exactly as RFC 2865 section 7.1 shows", () => {
    expect(encryptUserPassword("arctangent", SECRET, REQUEST_AUTHENTICATOR).toString("hex")).toBe(HIDDEN_ARCTANGENT);
  });

  it("recovers 'arctangent' from the RFC's octets", () => {
    const result = decryptUserPassword(Buffer.from(HIDDEN_ARCTANGENT, "hex"), SECRET, REQUEST_AUTHENTICATOR);
    expect(result.ok && result.password.toString()).toBe("arctangent");
  });

  it("round-trips passwords of every block count, chaining each block on the previous ciphertext", () => {
    for (const password of ["", "1", "0123456789abcdef", "0123456789abcdef0", "ü".repeat(40), "x".repeat(128)]) {
      const hidden = encryptUserPassword(password, SECRET, REQUEST_AUTHENTICATOR);
      expect(hidden.length % 16).toBe(0);
      expect(hidden.length).toBeGreaterThanOrEqual(16);
      const result = decryptUserPassword(hidden, SECRET, REQUEST_AUTHENTICATOR);
      expect(result.ok && result.password.toString("utf8")).toBe(password);
    }
  });

  it("gives a different password under a different secret", () => {
    const result = decryptUserPassword(Buffer.from(HIDDEN_ARCTANGENT, "hex"), Buffer.from("wrong"), REQUEST_AUTHENTICATOR);
    expect(result.ok && result.password.toString()).not.toBe("arctangent");
  });

  it("refuses hidden passwords that are not 16..128 octets in blocks of 16", () => {
    const reasonFor = (length: number) => {
      const result = decryptUserPassword(Buffer.alloc(length), SECRET, REQUEST_AUTHENTICATOR);
      return result.ok ? "ok" : result.reason;
    };
    expect(reasonFor(0)).toBe("length-out-of-range");
    expect(reasonFor(15)).toBe("length-not-multiple-of-16");
    expect(reasonFor(17)).toBe("length-not-multiple-of-16");
    expect(reasonFor(144)).toBe("length-out-of-range");
    expect(reasonFor(128)).toBe("ok");
  });

  it("refuses to hide a password over 128 octets", () => {
    expect(() => encryptUserPassword("x".repeat(129), SECRET, REQUEST_AUTHENTICATOR)).toThrow(RangeError);
  });
});

describe("Response Authenticator (RFC 2865 section 3)", () => {
  it("matches the Access-Accept of RFC 2865 section 7.1", () => {
    expect(responseAuthenticator(RFC_2865_7_1_ACCEPT, REQUEST_AUTHENTICATOR, SECRET).toString("hex")).toBe("86fe220e7624ba2a1005f6bf9b55e0b2");
  });
});

/** RFC 3579 section 3.2, written out again here: HMAC-MD5 over the packet with the value zeroed. */
function independentMessageAuthenticator(packet: Buffer, valueOffset: number, secret: Buffer, authenticator?: Buffer): string {
  const copy = Buffer.from(packet);
  copy.fill(0, valueOffset, valueOffset + 16);
  if (authenticator) copy.set(authenticator, 4);
  return createHmac("md5", secret).update(copy).digest("hex");
}

describe("verifyRequestMessageAuthenticator (RFC 3579 section 3.2)", () => {
  const verify = (bytes: Buffer, secret = SECRET) => {
    const result = verifyRequestMessageAuthenticator(bytes, secret);
    return result.ok ? "ok" : result.reason;
  };

  it("accepts a correct Message-Authenticator wherever it sits", () => {
    expect(verify(accessRequest({ secret: SECRET, userName: "nemo", password: "arctangent", messageAuthenticator: "last" }))).toBe("ok");
    expect(verify(accessRequest({ secret: SECRET, userName: "nemo", password: "arctangent", messageAuthenticator: "first" }))).toBe("ok");
  });

  it("ignores padding after Length, as the RFC 2865 section 3 codec does", () => {
    const bytes = accessRequest({ secret: SECRET, userName: "nemo", password: "x" });
    expect(verify(Buffer.concat([bytes, Buffer.from("ffff", "hex")]))).toBe("ok");
  });

  it("reports a wrong secret or a changed packet as a mismatch", () => {
    const bytes = accessRequest({ secret: SECRET, userName: "nemo", password: "x" });
    expect(verify(bytes, Buffer.from("xyzzy5462"))).toBe("mismatch");
    for (const offset of [1, 4, 19, 22, bytes.length - 1]) {
      const changed = Buffer.from(bytes);
      changed[offset]! ^= 0x01;
      expect(verify(changed)).toBe("mismatch");
    }
  });

  it("reports a missing, repeated or wrongly sized Message-Authenticator", () => {
    expect(verify(rfc2865Section71Request())).toBe("missing");
    const twice = accessRequest({ secret: SECRET, userName: "nemo", attributes: [{ type: Attribute.MessageAuthenticator, value: Buffer.alloc(16) }] });
    expect(verify(twice)).toBe("repeated");
    const short = accessRequest({ secret: SECRET, userName: "nemo", messageAuthenticator: "none", attributes: [{ type: Attribute.MessageAuthenticator, value: Buffer.alloc(15) }] });
    expect(verify(short)).toBe("wrong-length");
    expect(verify(Buffer.alloc(10))).toBe("malformed");
  });
});

/** The RFC 2865 section 7.1 Access-Request: from 2000, so no Message-Authenticator. */
function rfc2865Section71Request() {
  return encodePacket({
    code: Code.AccessRequest,
    identifier: 0,
    authenticator: REQUEST_AUTHENTICATOR,
    attributes: [
      { type: Attribute.UserName, value: Buffer.from("nemo") },
      { type: Attribute.UserPassword, value: Buffer.from(HIDDEN_ARCTANGENT, "hex") },
      { type: Attribute.NasIpAddress, value: Buffer.from([192, 168, 1, 16]) },
      { type: Attribute.NasPort, value: Buffer.from([0, 0, 0, 3]) },
    ],
  });
}

describe("signResponse", () => {
  const attributes = [
    { type: Attribute.ServiceType, value: Buffer.from([0, 0, 0, 1]) },
    { type: Attribute.ReplyMessage, value: Buffer.from("welcome") },
  ];
  const signed = signResponse({ code: Code.AccessAccept, identifier: 0, attributes }, REQUEST_AUTHENTICATOR, SECRET);

  it("puts Message-Authenticator first (BlastRADIUS), then the attributes in order", () => {
    const result = decodePacket(signed);
    if (!result.ok) throw new Error(result.reason);
    expect(result.packet.attributes.map((attribute) => attribute.type)).toEqual([Attribute.MessageAuthenticator, Attribute.ServiceType, Attribute.ReplyMessage]);
    expect(signed.subarray(20, 22).toString("hex")).toBe("5012");
  });

  it("computes Message-Authenticator over the packet with the REQUEST authenticator in place", () => {
    expect(signed.subarray(22, 38).toString("hex")).toBe(independentMessageAuthenticator(signed, 22, SECRET, REQUEST_AUTHENTICATOR));
  });

  it("computes the Response Authenticator over the finished Message-Authenticator", () => {
    const expected = createHash("md5").update(signed.subarray(0, 4)).update(REQUEST_AUTHENTICATOR).update(signed.subarray(20)).update(SECRET).digest();
    expect(signed.subarray(4, 20).equals(expected)).toBe(true);
  });

  it("replaces a Message-Authenticator the caller passed in", () => {
    const again = signResponse({ code: Code.AccessReject, identifier: 3, attributes: [{ type: Attribute.MessageAuthenticator, value: Buffer.alloc(16, 9) }] }, REQUEST_AUTHENTICATOR, SECRET);
    const result = decodePacket(again);
    expect(result.ok && result.packet.attributes.filter((attribute) => attribute.type === Attribute.MessageAuthenticator)).toHaveLength(1);
  });

  it("passes the NAS's own checks, and fails them after any change or under another secret", () => {
    expect(verifyResponse(signed, REQUEST_AUTHENTICATOR, SECRET).ok).toBe(true);
    const otherSecret = verifyResponse(signed, REQUEST_AUTHENTICATOR, Buffer.from("other"));
    expect(otherSecret.ok ? "ok" : otherSecret.reason).toBe("bad-response-authenticator");
    const changed = Buffer.from(signed);
    changed[changed.length - 1]! ^= 0x20;
    expect(verifyResponse(changed, REQUEST_AUTHENTICATOR, SECRET).ok).toBe(false);
  });
});

import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Attribute, Code } from "./attributes.js";
import { allAttributes, decodePacket, encodePacket, firstAttribute, textAttribute, type DecodeResult } from "./codec.js";

// RFC 2865 section 7.1: the Access-Request for "nemo" from NAS 192.168.1.16 port 3.
const RFC_2865_7_1_REQUEST = Buffer.from(
  "01000038" + "0f403f9473978057bd83d5cb98f4227a" + "01066e656d6f" + "02120dbe708d93d413ce3196e43f782a0aee" + "0406c0a80110" + "050600000003",
  "hex",
);

const header = (length: number, code: number = Code.AccessRequest) => {
  const bytes = Buffer.alloc(20);
  bytes[0] = code;
  bytes[1] = 1;
  bytes.writeUInt16BE(length, 2);
  return bytes;
};

/** A header whose Length covers the given attribute octets. */
const withAttributes = (hex: string) => {
  const attributes = Buffer.from(hex, "hex");
  return Buffer.concat([header(20 + attributes.length), attributes]);
};

const failure = (result: DecodeResult) => (result.ok ? "decoded" : result.reason);

describe("decodePacket", () => {
  it("reads the RFC 2865 section 7.1 Access-Request", () => {
    const result = decodePacket(RFC_2865_7_1_REQUEST);
    if (!result.ok) throw new Error(result.reason);
    const { packet } = result;
    expect(packet.code).toBe(Code.AccessRequest);
    expect(packet.identifier).toBe(0);
    expect(packet.authenticator.toString("hex")).toBe("0f403f9473978057bd83d5cb98f4227a");
    expect(packet.attributes.map((attribute) => attribute.type)).toEqual([Attribute.UserName, Attribute.UserPassword, Attribute.NasIpAddress, Attribute.NasPort]);
    expect(textAttribute(packet, Attribute.UserName)).toBe("nemo");
    expect(firstAttribute(packet, Attribute.NasIpAddress)?.toString("hex")).toBe("c0a80110");
    expect(firstAttribute(packet, Attribute.NasPort)?.readUInt32BE(0)).toBe(3);
    expect(firstAttribute(packet, Attribute.State)).toBeNull();
    expect(packet.bytes.equals(RFC_2865_7_1_REQUEST)).toBe(true);
  });

  it("reads a header-only packet with no attributes", () => {
    const result = decodePacket(header(20));
    expect(result.ok && result.packet.attributes).toEqual([]);
  });

  it("refuses a datagram shorter than the 20-octet header", () => {
    expect(failure(decodePacket(Buffer.alloc(0)))).toBe("shorter-than-header");
    expect(failure(decodePacket(RFC_2865_7_1_REQUEST.subarray(0, 19)))).toBe("shorter-than-header");
  });

  it("refuses a Length field below 20 or above 4096", () => {
    expect(failure(decodePacket(header(19)))).toBe("length-out-of-range");
    expect(failure(decodePacket(header(0)))).toBe("length-out-of-range");
    expect(failure(decodePacket(Buffer.concat([header(4097), Buffer.alloc(4077)])))).toBe("length-out-of-range");
  });

  it("refuses a datagram shorter than its Length field", () => {
    expect(failure(decodePacket(RFC_2865_7_1_REQUEST.subarray(0, RFC_2865_7_1_REQUEST.length - 1)))).toBe("shorter-than-length");
    expect(failure(decodePacket(header(21)))).toBe("shorter-than-length");
  });

  it("ignores octets beyond Length as padding", () => {
    const padded = Buffer.concat([RFC_2865_7_1_REQUEST, Buffer.from("deadbeef00ff", "hex")]);
    const result = decodePacket(padded);
    if (!result.ok) throw new Error(result.reason);
    expect(result.packet.attributes).toHaveLength(4);
    expect(result.packet.bytes.equals(RFC_2865_7_1_REQUEST)).toBe(true);
  });

  it("refuses an attribute whose Length is 0 or 1", () => {
    expect(failure(decodePacket(withAttributes("0100")))).toBe("attribute-length-below-2");
    expect(failure(decodePacket(withAttributes("0101")))).toBe("attribute-length-below-2");
    expect(failure(decodePacket(withAttributes("01036101000000")))).toBe("attribute-length-below-2");
  });

  it("refuses an attribute that runs past the packet's Length", () => {
    expect(failure(decodePacket(withAttributes("0106616263")))).toBe("attribute-past-end");
    // The octets are in the datagram, but beyond Length: padding, not attribute.
    const bytes = Buffer.concat([header(24), Buffer.from("0106616263646566", "hex")]);
    expect(failure(decodePacket(bytes))).toBe("attribute-past-end");
  });

  it("refuses a single octet left where an attribute header should be", () => {
    expect(failure(decodePacket(withAttributes("01036101")))).toBe("attribute-truncated");
  });

  it("accepts an attribute with an empty value (Length 2)", () => {
    const result = decodePacket(withAttributes("1802"));
    expect(result.ok && result.packet.attributes).toEqual([{ type: Attribute.State, value: Buffer.alloc(0) }]);
  });

  it("accepts a full 4096-octet packet", () => {
    const attributes = Array.from({ length: 15 }, () => ({ type: Attribute.ProxyState, value: Buffer.alloc(253, 1) }));
    const bytes = encodePacket({ code: 1, identifier: 9, authenticator: Buffer.alloc(16), attributes: [...attributes, { type: 18, value: Buffer.alloc(4096 - 20 - 15 * 255 - 2) }] });
    expect(bytes.length).toBe(4096);
    expect(decodePacket(bytes).ok).toBe(true);
  });

  it("never throws, whatever the bytes", () => {
    let decoded = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = randomBytes(i % 64);
      if (i % 3 === 0 && bytes.length >= 4) bytes.writeUInt16BE(Math.min(bytes.length, 20 + (i % 40)), 2);
      if (decodePacket(i % 2 ? bytes : new Uint8Array(bytes)).ok) decoded++;
    }
    expect(decoded).toBeLessThan(5_000);
  });
});

describe("encodePacket", () => {
  it("writes the RFC 2865 section 7.1 request octet for octet", () => {
    const result = decodePacket(RFC_2865_7_1_REQUEST);
    if (!result.ok) throw new Error(result.reason);
    expect(encodePacket(result.packet).equals(RFC_2865_7_1_REQUEST)).toBe(true);
  });

  it("round-trips repeated attributes in order", () => {
    const attributes = [
      { type: Attribute.ReplyMessage, value: Buffer.from("one") },
      { type: Attribute.Class, value: Buffer.from([0, 1, 2]) },
      { type: Attribute.ReplyMessage, value: Buffer.from("two") },
    ];
    const result = decodePacket(encodePacket({ code: Code.AccessAccept, identifier: 255, authenticator: Buffer.alloc(16, 7), attributes }));
    if (!result.ok) throw new Error(result.reason);
    expect(result.packet.identifier).toBe(255);
    expect(allAttributes(result.packet, Attribute.ReplyMessage).map(String)).toEqual(["one", "two"]);
    expect(result.packet.attributes).toEqual(attributes);
  });

  it("throws on a caller's bug: oversized value, oversized packet, bad header fields", () => {
    const base = { code: 2, identifier: 1, authenticator: Buffer.alloc(16) };
    expect(() => encodePacket({ ...base, attributes: [{ type: 18, value: Buffer.alloc(254) }] })).toThrow(RangeError);
    const many = Array.from({ length: 17 }, () => ({ type: 18, value: Buffer.alloc(253) }));
    expect(() => encodePacket({ ...base, attributes: many })).toThrow(RangeError);
    expect(() => encodePacket({ ...base, identifier: 256, attributes: [] })).toThrow(RangeError);
    expect(() => encodePacket({ ...base, authenticator: Buffer.alloc(15), attributes: [] })).toThrow(RangeError);
    expect(() => encodePacket({ ...base, attributes: [{ type: 0, value: Buffer.alloc(1) }] })).toThrow(RangeError);
  });
});

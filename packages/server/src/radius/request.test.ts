import { describe, expect, it } from "vitest";
import { Attribute, MICROSOFT_VENDOR_ID } from "./attributes.js";
import { decodePacket, type RadiusAttribute } from "./codec.js";
import { readPapRequest } from "./request.js";
import { accessRequest, type TestRequest } from "./testing.js";

const secret = Buffer.from("s3cret");

function read(request: Omit<TestRequest, "secret">) {
  const decoded = decodePacket(accessRequest({ secret, ...request }));
  if (!decoded.ok) throw new Error(decoded.reason);
  const result = readPapRequest(decoded.packet, secret);
  return result.ok ? result.request : result.reason;
}

const attribute = (type: number, value: string | Buffer): RadiusAttribute => ({ type, value: Buffer.from(value) });

describe("readPapRequest", () => {
  it("reads the user name, the decrypted password and the NAS's details", () => {
    expect(
      read({
        userName: "alice",
        password: "123456",
        attributes: [attribute(Attribute.NasIdentifier, "vpn-1"), attribute(Attribute.CallingStationId, "203.0.113.9"), attribute(Attribute.State, "s1")],
      }),
    ).toEqual({ userName: "alice", password: "123456", state: Buffer.from("s1"), nasIdentifier: "vpn-1", callingStationId: "203.0.113.9" });
  });

  it("reads a User-Password of 16 hidden NULs as an empty password", () => {
    expect(read({ userName: "push", password: "" })).toMatchObject({ userName: "push", password: "" });
  });

  it("reads a request with no password attribute at all as an empty password, as FreeRADIUS sends it", () => {
    expect(read({ userName: "push" })).toMatchObject({ userName: "push", password: "" });
  });

  it("refuses CHAP, ARAP, EAP and MS-CHAP as not PAP", () => {
    const microsoft = Buffer.alloc(6);
    microsoft.writeUInt32BE(MICROSOFT_VENDOR_ID, 0);
    expect(read({ userName: "alice", attributes: [attribute(Attribute.ChapPassword, Buffer.alloc(17))] })).toBe("not-pap");
    expect(read({ userName: "alice", attributes: [attribute(Attribute.ArapPassword, Buffer.alloc(16))] })).toBe("not-pap");
    expect(read({ userName: "alice", attributes: [attribute(Attribute.EapMessage, Buffer.from([2, 0, 0, 5, 1]))] })).toBe("not-pap");
    expect(read({ userName: "alice", attributes: [attribute(Attribute.VendorSpecific, microsoft)] })).toBe("not-pap");
  });

  it("refuses a request without User-Name", () => {
    expect(read({ password: "123456" })).toBe("no-user-name");
  });

  it("refuses a hidden password of the wrong length, and two User-Passwords", () => {
    expect(read({ userName: "alice", attributes: [attribute(Attribute.UserPassword, Buffer.alloc(17))] })).toBe("malformed-password");
    expect(read({ userName: "alice", password: "a", attributes: [attribute(Attribute.UserPassword, Buffer.alloc(16))] })).toBe("repeated-password");
  });
});

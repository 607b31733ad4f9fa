import { describe, expect, it } from "vitest";
import { Attribute, Code } from "./attributes.js";
import { allAttributes } from "./codec.js";
import { MAX_REPLY_MESSAGE_OCTETS, replyFor } from "./reply.js";

describe("replyFor", () => {
  it("maps accept, reject and challenge to their codes", () => {
    expect(replyFor({ result: "accept" }, []).code).toBe(Code.AccessAccept);
    expect(replyFor({ result: "reject" }, []).code).toBe(Code.AccessReject);
    expect(replyFor({ result: "challenge" }, []).code).toBe(Code.AccessChallenge);
  });

  it("sends State with a challenge only", () => {
    const state = Buffer.from("challenge-1");
    expect(allAttributes(replyFor({ result: "challenge", state }, []), Attribute.State)).toEqual([state]);
    expect(allAttributes(replyFor({ result: "accept", state }, []), Attribute.State)).toEqual([]);
    expect(allAttributes(replyFor({ result: "reject", state }, []), Attribute.State)).toEqual([]);
  });

  it("writes Session-Timeout as a 32-bit integer, never on a reject", () => {
    const [value] = allAttributes(replyFor({ result: "accept", sessionTimeoutSeconds: 3600 }, []), Attribute.SessionTimeout);
    expect(value?.toString("hex")).toBe("00000e10");
    expect(allAttributes(replyFor({ result: "reject", sessionTimeoutSeconds: 3600 }, []), Attribute.SessionTimeout)).toEqual([]);
  });

  it("copies Proxy-State unmodified and in order (RFC 2865 section 5.33)", () => {
    const proxyStates = [Buffer.from("first"), Buffer.from([0, 255]), Buffer.from("third")];
    expect(allAttributes(replyFor({ result: "reject" }, proxyStates), Attribute.ProxyState)).toEqual(proxyStates);
  });

  it("splits a long Reply-Message into attributes of at most 253 octets, never inside a character", () => {
    const text = "Approve the login on your phone: ".repeat(4) + "é€😀".repeat(60);
    const parts = allAttributes(replyFor({ result: "challenge", replyMessage: text }, []), Attribute.ReplyMessage);
    expect(parts.length).toBeGreaterThan(1);
    for (const part of parts) expect(part.length).toBeLessThanOrEqual(253);
    expect(parts.map((part) => part.toString("utf8")).join("")).toBe(text);
  });

  it("cuts a Reply-Message beyond 2048 octets", () => {
    const parts = allAttributes(replyFor({ result: "reject", replyMessage: "x".repeat(10_000) }, []), Attribute.ReplyMessage);
    expect(parts.reduce((sum, part) => sum + part.length, 0)).toBe(MAX_REPLY_MESSAGE_OCTETS);
  });

  it("throws on a decision that is a bug: empty or oversized State, impossible Session-Timeout", () => {
    expect(() => replyFor({ result: "challenge", state: Buffer.alloc(0) }, [])).toThrow(RangeError);
    expect(() => replyFor({ result: "challenge", state: Buffer.alloc(254) }, [])).toThrow(RangeError);
    expect(() => replyFor({ result: "accept", sessionTimeoutSeconds: -1 }, [])).toThrow(RangeError);
    expect(() => replyFor({ result: "accept", sessionTimeoutSeconds: 1.5 }, [])).toThrow(RangeError);
  });
});

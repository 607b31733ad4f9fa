import { describe, expect, it } from "vitest";
import { fixedClock } from "../clock.js";
import { createDuplicateCache, duplicateKey } from "./duplicates.js";

const answer = Buffer.from("answer");

describe("duplicate cache", () => {
  it("keys a request by source address, port, Identifier and Request Authenticator", () => {
    const authenticator = Buffer.alloc(16, 1);
    const key = duplicateKey({ address: "192.0.2.1", port: 1645 }, 9, authenticator);
    expect(duplicateKey({ address: "192.0.2.1", port: 1645 }, 9, Buffer.from(authenticator))).toBe(key);
    expect(duplicateKey({ address: "192.0.2.1", port: 1646 }, 9, authenticator)).not.toBe(key);
    expect(duplicateKey({ address: "192.0.2.1", port: 1645 }, 10, authenticator)).not.toBe(key);
    expect(duplicateKey({ address: "192.0.2.1", port: 1645 }, 9, Buffer.alloc(16, 2))).not.toBe(key);
  });

  it("reports a request in flight until it is answered, then gives the answer", () => {
    const cache = createDuplicateCache({ ttlMs: 1000, maxEntries: 10, clock: fixedClock(0) });
    expect(cache.claim("a").kind).toBe("new");
    expect(cache.claim("a").kind).toBe("in-flight");
    cache.complete("a", answer);
    expect(cache.claim("a")).toEqual({ kind: "answered", response: answer });
  });

  it("forgets an answer once the window has passed", () => {
    const clock = fixedClock(0);
    const cache = createDuplicateCache({ ttlMs: 1000, maxEntries: 10, clock });
    cache.claim("a");
    cache.complete("a", answer);
    clock.advance(999);
    expect(cache.claim("a").kind).toBe("answered");
    clock.advance(1);
    expect(cache.claim("a").kind).toBe("new");
    expect(cache.size()).toEqual({ answered: 0, inFlight: 1 });
  });

  it("forgets an abandoned request, so its retransmission is processed afresh", () => {
    const cache = createDuplicateCache({ ttlMs: 1000, maxEntries: 10, clock: fixedClock(0) });
    cache.claim("a");
    cache.abandon("a");
    expect(cache.claim("a").kind).toBe("new");
  });

  it("keeps at most maxEntries answers, forgetting the oldest first", () => {
    const cache = createDuplicateCache({ ttlMs: 60_000, maxEntries: 3, clock: fixedClock(0) });
    for (const key of ["a", "b", "c", "d"]) {
      cache.claim(key);
      cache.complete(key, Buffer.from(key));
    }
    expect(cache.size().answered).toBe(3);
    expect(cache.claim("a").kind).toBe("new");
    expect(cache.claim("d").kind).toBe("answered");
  });

  it("refuses new requests while maxEntries are in flight", () => {
    const cache = createDuplicateCache({ ttlMs: 60_000, maxEntries: 2, clock: fixedClock(0) });
    expect(cache.claim("a").kind).toBe("new");
    expect(cache.claim("b").kind).toBe("new");
    expect(cache.claim("c").kind).toBe("full");
    cache.complete("a", answer);
    expect(cache.claim("c").kind).toBe("new");
  });

  it("keeps no answers when the window is 0", () => {
    const cache = createDuplicateCache({ ttlMs: 0, maxEntries: 10, clock: fixedClock(0) });
    cache.claim("a");
    cache.complete("a", answer);
    expect(cache.claim("a").kind).toBe("new");
  });

  it("stays bounded under 200,000 distinct requests", () => {
    const clock = fixedClock(0);
    const cache = createDuplicateCache({ ttlMs: 30_000, maxEntries: 1000, clock });
    for (let i = 0; i < 200_000; i++) {
      cache.claim(`k${i}`);
      cache.complete(`k${i}`, answer);
      clock.advance(1);
    }
    expect(cache.size()).toEqual({ answered: 1000, inFlight: 0 });
  });
});

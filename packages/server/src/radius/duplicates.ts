import type { Clock } from "../clock.js";

/**
 * Duplicate detection, RFC 5080 section 2.2.2: a retransmission carries the same source
 * address and port, Identifier and Request Authenticator. Its answer is sent again from
 * here and the request is never authenticated twice (a one-time passcode would fail the
 * second time, and a push would be sent twice).
 *
 * A retransmission that arrives while the first copy is still being authenticated is
 * DROPPED (as FreeRADIUS does): the first copy's answer goes to the same address and port
 * when it is ready, and a retransmission after that is answered from the cache. Keeping
 * no list of waiters means a burst of retransmissions costs no memory and is not amplified.
 *
 * Memory is bounded twice: answers expire after ttlMs, and each map holds at most
 * maxEntries (the oldest answer is forgotten first; a new request is refused when that
 * many are in flight).
 */

export type DuplicateClaim =
  /** Seen and answered within the window: send this again. */
  | { kind: "answered"; response: Buffer }
  /** Seen and still being authenticated: drop this copy. */
  | { kind: "in-flight" }
  /** Not seen: it is now in flight, and the caller must later call complete or abandon. */
  | { kind: "new" }
  /** Not seen, but maxEntries requests are in flight already: drop it. */
  | { kind: "full" };

export interface DuplicateCache {
  claim(key: string): DuplicateClaim;
  /** The request was answered: remember the answer for ttlMs. */
  complete(key: string, response: Buffer): void;
  /** The request got no answer (an error): forget it, so a retransmission is processed afresh. */
  abandon(key: string): void;
  /** What is held now; answers past their time are forgotten first. */
  size(): { answered: number; inFlight: number };
  clear(): void;
}

export interface DuplicateCacheOptions {
  /** How long an answer is kept for retransmissions; 0 keeps none. */
  ttlMs: number;
  /** The most answers kept, and the most requests in flight. */
  maxEntries: number;
  clock: Clock;
}

/** The identity of a request for duplicate detection (RFC 5080 section 2.2.2). */
export function duplicateKey(source: { address: string; port: number }, identifier: number, requestAuthenticator: Buffer): string {
  return `${source.address}|${source.port}|${identifier}|${requestAuthenticator.toString("hex")}`;
}

export function createDuplicateCache(options: DuplicateCacheOptions): DuplicateCache {
  const { ttlMs, maxEntries, clock } = options;
  // Insertion order is expiry order: every answer lives ttlMs from when it was stored.
  const answered = new Map<string, { response: Buffer; expiresAtMs: number }>();
  const inFlight = new Set<string>();

  function forgetExpired(nowMs: number) {
    for (const [key, entry] of answered) {
      if (entry.expiresAtMs > nowMs) break;
      answered.delete(key);
    }
  }

  return {
    claim(key) {
      const nowMs = clock.nowMs();
      forgetExpired(nowMs);
      const entry = answered.get(key);
      // Checked again: a clock stepped backwards can leave an expired entry behind a live one.
      if (entry && entry.expiresAtMs > nowMs) return { kind: "answered", response: entry.response };
      if (inFlight.has(key)) return { kind: "in-flight" };
      if (inFlight.size >= maxEntries) return { kind: "full" };
      inFlight.add(key);
      return { kind: "new" };
    },
    complete(key, response) {
      inFlight.delete(key);
      if (ttlMs <= 0 || maxEntries <= 0) return;
      answered.delete(key);
      answered.set(key, { response, expiresAtMs: clock.nowMs() + ttlMs });
      while (answered.size > maxEntries) {
        const oldest = answered.keys().next();
        if (oldest.done) break;
        answered.delete(oldest.value);
      }
    },
    abandon(key) {
      inFlight.delete(key);
    },
    size: () => {
      // What is held now: answers past their time are gone, even with no request since.
      forgetExpired(clock.nowMs());
      return { answered: answered.size, inFlight: inFlight.size };
    },
    clear() {
      answered.clear();
      inFlight.clear();
    },
  };
}

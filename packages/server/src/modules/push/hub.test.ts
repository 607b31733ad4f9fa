import { describe, expect, it } from "vitest";
import { createChallengeHub } from "./hub.js";

describe("challenge hub", () => {
  it("wakes a waiter told while it was looking at the database, not at its next look", async () => {
    const hub = createChallengeHub();
    let checks = 0;
    // The next look would come after two minutes, past the test's timeout: only the
    // news that came during the first look can end the wait in time.
    const result = await hub.waitUntil(
      "challenge:chl_1",
      120_000,
      async () => {
        if (checks++ > 0) return "woken";
        hub.challengeChanged("chl_1");
        return null;
      },
      120_000,
    );
    expect(result).toBe("woken");
    expect(checks).toBe(2);
  });

  it("stops looking at the database once its waiter has gone (the client closed the long poll)", async () => {
    const hub = createChallengeHub();
    const gone = new AbortController();
    let checks = 0;
    const waiting = hub.waitUntil("challenge:chl_2", 120_000, async () => (checks++, null), 50, gone.signal);
    await new Promise((resolve) => setTimeout(resolve, 130));
    gone.abort();
    expect(await waiting).toBeNull();
    const looked = checks;
    expect(looked).toBeGreaterThanOrEqual(2);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(checks).toBe(looked);
    // Gone before it began: not even one look.
    expect(await hub.waitUntil("challenge:chl_3", 120_000, async () => (checks++, null), 50, gone.signal)).toBeNull();
    expect(checks).toBe(looked);
  });
});

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
});

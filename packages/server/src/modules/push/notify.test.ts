import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStorage, type Storage } from "../../storage/database.js";
import { createTestDatabase, type TestDatabase } from "../../testing/databases.js";
import { createChallengeHub } from "./hub.js";
import { connectHubAcrossNodes } from "./notify.js";

describe("push events between nodes over PostgreSQL LISTEN/NOTIFY", () => {
  let database: TestDatabase;
  let storage: Storage;
  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    storage = openStorage(database.target);
  });
  afterAll(async () => {
    await storage.close();
    await database.drop();
  });

  it("wakes a device's poll on another node, long before the database re-read would", async () => {
    const url = (database.target as { url: string }).url;
    const [nodeA, nodeB] = [createChallengeHub(), createChallengeHub()];
    const links = [await connectHubAcrossNodes(nodeA, storage.db, url), await connectHubAcrossNodes(nodeB, storage.db, url)];
    try {
      let checks = 0;
      // The re-read comes only after 10 s and the wait gives up after 5 s: only a
      // notification from node A can make node B look again in time.
      const waiting = nodeB.waitUntil("device:dev_1", 5_000, async () => (checks++ > 0 ? "woken" : null), 10_000);
      await new Promise((resolve) => setTimeout(resolve, 200));
      nodeA.deviceHasWork(["dev_1"]);
      expect(await waiting).toBe("woken");
    } finally {
      await Promise.all(links.map((link) => link.close()));
    }
  });
});

import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/src/**/*.test.ts"],
    // Storage tests open real databases and CLI tests spawn the real binary:
    // generous timeouts, but no timing assertions anywhere.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});

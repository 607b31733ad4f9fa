import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseEnvFile } from "./config.js";

describe("configuration", () => {
  it("uses SQLite in ./data on 127.0.0.1:8080 when nothing is set", () => {
    const config = loadConfig({});
    expect(config.http).toMatchObject({ host: "127.0.0.1", port: 8080 });
    expect(config.database).toEqual({ kind: "sqlite", file: path.resolve("data/tessera.db") });
    expect(config.publicUrl).toBe("http://127.0.0.1:8080");
    expect(config.masterKey.keyFile).toBe(path.resolve("data/master.keys"));
  });

  it("uses PostgreSQL when DATABASE_URL is set", () => {
    const config = loadConfig({ DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tessera" });
    expect(config.database).toEqual({ kind: "postgres", url: "postgres://postgres@127.0.0.1:5432/tessera" });
  });

  it("refuses bad values with one message naming each", () => {
    expect(() => loadConfig({ TESSERA_HTTP_PORT: "eighty", DATABASE_URL: "mysql://x" })).toThrow(ConfigError);
    try {
      loadConfig({ TESSERA_HTTP_PORT: "eighty", DATABASE_URL: "mysql://x" });
    } catch (error) {
      expect((error as Error).message).toMatch(/TESSERA_HTTP_PORT/);
      expect((error as Error).message).toMatch(/DATABASE_URL/);
    }
  });

  it("reads an env file, the environment winning over it", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tessera-config-"));
    const file = path.join(dir, "tessera.env");
    writeFileSync(file, "# comment\nTESSERA_HTTP_PORT=9000\nTESSERA_PUBLIC_URL='https://mfa.example.com/'\nTESSERA_HTTP_HOST=0.0.0.0\n");
    const config = loadConfig({ TESSERA_ENV_FILE: file, TESSERA_HTTP_HOST: "127.0.0.2" });
    expect(config.http).toMatchObject({ host: "127.0.0.2", port: 9000 });
    expect(config.publicUrl).toBe("https://mfa.example.com");
  });

  it("refuses an env file line that is not KEY=value", () => {
    expect(() => parseEnvFile("JUSTTEXT")).toThrow(ConfigError);
  });
});

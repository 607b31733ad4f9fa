import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { documentedOptions } from "./config.js";
import { errorCatalogue } from "./errors.js";

const doc = (name: string) => readFileSync(new URL(`../../../docs/${name}`, import.meta.url), "utf8");

describe("the docs stay in step with the code", () => {
  it("lists every error code with its HTTP status in docs/errors.md", () => {
    const text = doc("errors.md");
    for (const [code, definition] of Object.entries(errorCatalogue)) {
      expect(text).toContain(`| \`${code}\` | ${definition.status} |`);
    }
    const documented = [...text.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(errorCatalogue).sort());
  });

  it("documents every configuration option in docs/configuration.md", () => {
    const text = doc("configuration.md");
    for (const option of documentedOptions) expect(text).toContain(`| \`${option}\` |`);
  });
});

import { describe, expect, it } from "vitest";
import { detectPlatform, targetOf } from "./platform.js";

const agents = {
  iphone: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  ipad: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  android: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  androidTablet: "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  windows: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
  mac: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  linux: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
};

describe("platform detection for the self-enrollment page", () => {
  it.each([
    ["iphone", "iOS", "17.4", "phone"],
    ["ipad", "iOS", null, "tablet"],
    ["android", "Android", "14", "phone"],
    ["androidTablet", "Android", "13", "tablet"],
    ["windows", "Windows", "10.0", "desktop"],
    ["mac", "macOS", "14.4", "desktop"],
    ["linux", "Linux", null, "desktop"],
  ] as const)("recognises %s", (name, os, osVersion, deviceType) => {
    expect(detectPlatform(agents[name])).toMatchObject({ os, osVersion, deviceType });
  });

  it("falls back to unknown without a user agent", () => {
    expect(detectPlatform(undefined)).toEqual({ os: "unknown", osVersion: null, deviceType: "desktop", browser: null });
    expect(targetOf(detectPlatform(agents.iphone))).toBe("iOS 17.4");
  });
});

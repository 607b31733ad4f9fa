import type { AppPlatform } from "../../src/core/authenticator.ts";

export const APP_VERSION = "web 0.1.0";

function dotted(version: string | undefined): string | null {
  return version ? version.replace(/_/g, ".") : null;
}

const WINDOWS_NT: Record<string, string> = { "10.0": "10", "6.3": "8.1", "6.2": "8", "6.1": "7" };

/**
 * What the app tells the server about the device when it enrolls (the console's Target
 * and Device Type). iPadOS presents itself as a Mac; touch points tell them apart.
 */
export function platformFromUserAgent(userAgent: string, maxTouchPoints = 0): AppPlatform {
  const ua = userAgent;
  const app = { appVersion: APP_VERSION };
  if (/iPhone|iPod/.test(ua)) return { os: "iOS", osVersion: dotted(/OS (\d+(?:[_.]\d+)*)/.exec(ua)?.[1]), deviceType: "phone", ...app };
  if (/iPad/.test(ua)) return { os: "iOS", osVersion: dotted(/OS (\d+(?:[_.]\d+)*)/.exec(ua)?.[1]), deviceType: "tablet", ...app };
  if (/Macintosh/.test(ua) && maxTouchPoints > 1) return { os: "iOS", osVersion: /Version\/(\d+(?:\.\d+)*)/.exec(ua)?.[1] ?? null, deviceType: "tablet", ...app };
  if (/Android/.test(ua)) {
    return { os: "Android", osVersion: /Android (\d+(?:\.\d+)*)/.exec(ua)?.[1] ?? null, deviceType: /Mobile/.test(ua) ? "phone" : "tablet", ...app };
  }
  if (/Windows NT/.test(ua)) {
    const nt = /Windows NT (\d+\.\d+)/.exec(ua)?.[1];
    return { os: "Windows", osVersion: nt ? (WINDOWS_NT[nt] ?? nt) : null, deviceType: "desktop", ...app };
  }
  if (/Macintosh|Mac OS X/.test(ua)) return { os: "macOS", osVersion: dotted(/Mac OS X (\d+(?:[_.]\d+)*)/.exec(ua)?.[1]), deviceType: "desktop", ...app };
  if (/Linux|X11|CrOS/.test(ua)) return { os: "Linux", osVersion: null, deviceType: "desktop", ...app };
  return { os: "unknown", osVersion: null, deviceType: "desktop", ...app };
}

/** "this phone", "this tablet", "this computer": how the app speaks of the device. */
export function thisDevice(platform: AppPlatform): string {
  return platform.deviceType === "phone" ? "this phone" : platform.deviceType === "tablet" ? "this tablet" : "this computer";
}

/** What the self-enrollment page needs to know about the browser it talks to. */
export interface Platform {
  os: "iOS" | "Android" | "Windows" | "macOS" | "Linux" | "ChromeOS" | "unknown";
  osVersion: string | null;
  deviceType: "phone" | "tablet" | "desktop";
  browser: string | null;
}

function version(match: RegExpExecArray | null): string | null {
  return match?.[1] ? match[1].replace(/_/g, ".") : null;
}

// A few well-known User-Agent shapes are enough to say how to get the app; the device
// itself reports exact details when it enrolls.
export function detectPlatform(userAgent: string | undefined): Platform {
  const ua = userAgent ?? "";
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrome\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : null;
  if (/iPad/.test(ua) || (/Macintosh/.test(ua) && /Mobile\//.test(ua))) {
    return { os: "iOS", osVersion: version(/OS (\d+[_.]\d+)/.exec(ua)), deviceType: "tablet", browser };
  }
  if (/iPhone|iPod/.test(ua)) return { os: "iOS", osVersion: version(/OS (\d+[_.]\d+)/.exec(ua)), deviceType: "phone", browser };
  if (/Android/.test(ua)) {
    return { os: "Android", osVersion: version(/Android (\d+(?:\.\d+)?)/.exec(ua)), deviceType: /Mobile/.test(ua) ? "phone" : "tablet", browser };
  }
  if (/CrOS/.test(ua)) return { os: "ChromeOS", osVersion: null, deviceType: "desktop", browser };
  if (/Windows NT/.test(ua)) return { os: "Windows", osVersion: version(/Windows NT (\d+\.\d+)/.exec(ua)), deviceType: "desktop", browser };
  if (/Macintosh|Mac OS X/.test(ua)) return { os: "macOS", osVersion: version(/Mac OS X (\d+[_.]\d+)/.exec(ua)), deviceType: "desktop", browser };
  if (/Linux/.test(ua)) return { os: "Linux", osVersion: null, deviceType: "desktop", browser };
  return { os: "unknown", osVersion: null, deviceType: "desktop", browser };
}

/** "iOS 17.4", "Windows", "unknown": the Target shown in the console. */
export function targetOf(platform: { os: string; osVersion: string | null }): string {
  return platform.osVersion ? `${platform.os} ${platform.osVersion}` : platform.os;
}

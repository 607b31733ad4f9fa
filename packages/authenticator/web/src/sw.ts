// The service worker: caches the whole app shell when it installs, so the app (and its
// passcodes, computed on the device) works offline. Requests to the server's API are
// never cached. The list of files is written in at build time (vite.config.ts).
import { createAuthenticator } from "../../src/core/authenticator.ts";
import { platformFromUserAgent } from "./platform.ts";
import { indexedDbKeyVault, indexedDbStateStore } from "./storage.ts";
import { subscribeWith } from "./web-push.ts";

interface ExtendableEventLike extends Event {
  waitUntil(promise: Promise<unknown>): void;
}
interface FetchEventLike extends ExtendableEventLike {
  readonly request: Request;
  respondWith(response: Promise<Response>): void;
}
interface PushEventLike extends ExtendableEventLike {
  readonly data: { json(): unknown } | null;
}
interface NotificationEventLike extends ExtendableEventLike {
  readonly notification: Notification;
}
interface WindowClientLike {
  readonly url: string;
  readonly focused: boolean;
  readonly visibilityState: DocumentVisibilityState;
  focus(): Promise<WindowClientLike>;
  navigate(url: string): Promise<WindowClientLike | null>;
}
interface ServiceWorkerScopeLike {
  addEventListener(type: "install" | "activate", listener: (event: ExtendableEventLike) => void): void;
  addEventListener(type: "fetch", listener: (event: FetchEventLike) => void): void;
  addEventListener(type: "push", listener: (event: PushEventLike) => void): void;
  addEventListener(type: "notificationclick", listener: (event: NotificationEventLike) => void): void;
  addEventListener(type: "pushsubscriptionchange", listener: (event: ExtendableEventLike) => void): void;
  skipWaiting(): Promise<void>;
  readonly clients: {
    claim(): Promise<void>;
    matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<WindowClientLike[]>;
    openWindow(url: string): Promise<WindowClientLike | null>;
  };
  readonly registration: { showNotification(title: string, options: NotificationOptions & { requireInteraction?: boolean }): Promise<void>; readonly pushManager: PushManager };
  readonly location: Location;
}

// The DOM's types are in scope (one tsconfig for the app); a worker's own are declared above.
const worker = self as unknown as ServiceWorkerScopeLike;

const PRECACHE: string[] = JSON.parse("__PRECACHE_MANIFEST__") as string[];
const SHELL = "/app/";

/** A short name for this build's file list (FNV-1a): a new build gets a new cache. */
function fingerprint(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return (hash >>> 0).toString(36);
}

const CACHE = `tessera-app-${fingerprint(PRECACHE.join("\n"))}`;

worker.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(PRECACHE.map((url) => new Request(url, { cache: "reload" }))))
      .then(() => worker.skipWaiting()),
  );
});

worker.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name.startsWith("tessera-app-") && name !== CACHE).map((name) => caches.delete(name))))
      .then(() => worker.clients.claim()),
  );
});

worker.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== worker.location.origin || !url.pathname.startsWith("/app/")) return;
  // Every page of the app is the one shell; the route is in the fragment.
  const key = request.mode === "navigate" ? SHELL : url.pathname;
  if (!PRECACHE.includes(key)) return;
  event.respondWith(caches.match(key, { cacheName: CACHE }).then((cached) => cached ?? fetch(request)));
});

/** What the server's Web Push messages hold (encrypted for this device alone): a push login, or its end. */
type PushMessage =
  | { type: "challenge"; id: string; resourceName: string; source: string; numberToMatch: string; expiresAt: string }
  | { type: "ended"; id: string; outcome: "approved" | "denied" | "fraud" | "expired" | "cancelled"; resourceName?: string };
type EndedMessage = Extract<PushMessage, { type: "ended" }>;

const ENDED: Record<EndedMessage["outcome"], string> = {
  approved: "approved on another of your devices",
  denied: "denied on another of your devices",
  fraud: "denied and reported on another of your devices",
  expired: "nobody answered in time",
  cancelled: "withdrawn: the passcode was typed instead, or the sign-in page was left",
};

/** The app in front already shows requests from its live connection. A hidden window (in the background, or kept for the back button) is not in front. */
const appInFront = async () =>
  (await worker.clients.matchAll({ type: "window", includeUncontrolled: true })).some(
    (client) => client.focused && client.visibilityState === "visible" && new URL(client.url).pathname.startsWith(SHELL),
  );

/**
 * The ends heard, kept where they outlive the worker (the browser stops an idle one
 * within a minute): push services do not promise order, and one that hands over a
 * login's end before its request must not leave that request in the tray. A request
 * comes before its login expires, at most five minutes after it opened (the longest
 * push timeout an application may set) and so before its end is six minutes old.
 */
const ENDS = "tessera-ended";
const END_KEPT_MS = 6 * 60_000;
const endKey = (id: string) => `${worker.location.origin}/app/ended/${encodeURIComponent(id)}`;

async function rememberEnd(message: EndedMessage): Promise<void> {
  const cache = await caches.open(ENDS);
  await cache.put(endKey(message.id), new Response(JSON.stringify(message), { headers: { "x-kept-until": String(Date.now() + END_KEPT_MS) } }));
  // Ends too old to matter go as new ones come; there are never more than a few.
  for (const request of await cache.keys()) {
    const kept = await cache.match(request);
    if (!kept || Number(kept.headers.get("x-kept-until")) < Date.now()) await cache.delete(request);
  }
}

async function endHeard(id: string): Promise<EndedMessage | null> {
  const kept = await (await caches.open(ENDS)).match(endKey(id));
  return kept && Number(kept.headers.get("x-kept-until")) >= Date.now() ? ((await kept.json()) as EndedMessage) : null;
}

/** A sign-in request: the notification opens its approval screen. */
async function showSignIn(message: Extract<PushMessage, { type: "challenge" }>): Promise<void> {
  if (await appInFront()) return;
  // Its end came first: the request is over, and says how it ended instead of asking.
  // Should the cache fail, the request still shows.
  const ended = await endHeard(message.id).catch(() => null);
  if (ended) return showEnded(ended);
  // Delivered after the login expired (the phone was offline): it says so instead of asking.
  if (Date.parse(message.expiresAt) <= Date.now()) return showEnded({ type: "ended", id: message.id, outcome: "expired", resourceName: message.resourceName });
  await worker.registration.showNotification(`Sign in to ${message.resourceName}?`, {
    body: `From ${message.source}. Number to match: ${message.numberToMatch}. Tap to approve or deny.`,
    tag: message.id,
    icon: "/app/icons/icon-192.png",
    requireInteraction: true,
    data: { url: `/app/#/push/${encodeURIComponent(message.id)}` },
  });
}

/**
 * The login ended: its request leaves the tray, replaced (same tag) by a quiet
 * notification, no sound and no vibration, that says how it ended. Browsers want every
 * push message to show something (Chrome otherwise shows "This site has been updated in
 * the background", Safari drops a subscription that keeps showing nothing), so it is
 * shown even where the request was dismissed or never shown. The tray is never read
 * here: in headless Chromium a look at it just after a notification was shown could
 * lose that notification.
 */
async function showEnded(message: EndedMessage): Promise<void> {
  if (await appInFront()) return;
  await worker.registration.showNotification("Sign-in request ended", {
    body: `${message.resourceName ? `${message.resourceName}: ` : ""}${ENDED[message.outcome] ?? "it is no longer waiting"}.`,
    tag: message.id,
    icon: "/app/icons/icon-192.png",
    silent: true,
    data: { url: SHELL },
  });
}

// Messages are handled one at a time, in the order they came: a request and its end
// that come together must not swap places in the tray.
let handling: Promise<void> = Promise.resolve();

// A push login while the app is closed or in the background: a notification that opens
// its approval screen, replaced once the login has ended. The answer still goes through
// the app (signed, with the passcode).
worker.addEventListener("push", (event) => {
  let message: PushMessage | undefined;
  try {
    message = event.data?.json() as PushMessage | undefined;
  } catch {
    return;
  }
  const next = message;
  if (next?.type !== "challenge" && next?.type !== "ended") return;
  handling = handling.catch(() => undefined).then(async () => {
    if (next.type === "challenge") return showSignIn(next);
    // Remembered even where nothing shows (the app in front), and should that fail the
    // end is still shown.
    await rememberEnd(next).catch((error: unknown) => console.warn("push: could not keep the end of a sign-in request", error));
    return showEnded(next);
  });
  event.waitUntil(handling);
});

worker.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data as { url?: string } | null)?.url ?? SHELL;
  event.waitUntil(
    worker.clients.matchAll({ type: "window", includeUncontrolled: true }).then(async (windows) => {
      const open = windows.find((client) => new URL(client.url).pathname.startsWith(SHELL));
      if (!open) return void (await worker.clients.openWindow(url));
      await open.focus();
      await open.navigate(url);
    }),
  );
});

// The push service renewed or dropped this browser's subscription, perhaps while the app
// is closed: subscribe again and give each server the new subscription, signed with the
// device's key from IndexedDB, as the app does when it starts. Until then Web Push
// messages would go to an endpoint that no longer reaches this browser.
worker.addEventListener("pushsubscriptionchange", (event) => {
  const core = createAuthenticator({
    store: indexedDbStateStore(),
    vault: indexedDbKeyVault(),
    fetch: fetch.bind(globalThis),
    platform: platformFromUserAgent(navigator.userAgent),
    webPush: { subscribe: async (key) => (typeof Notification !== "undefined" && Notification.permission === "granted" ? subscribeWith(worker.registration.pushManager, key) : null) },
  });
  const renewing = core.renewWebPush().catch((error: unknown) => console.warn("push: could not renew the Web Push subscription", error));
  try {
    event.waitUntil(renewing);
  } catch {
    // Only an event from the browser itself can keep the worker alive.
  }
});

export {};

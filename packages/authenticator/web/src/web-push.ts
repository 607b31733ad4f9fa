/**
 * Web Push for the web app: a subscription with the server's VAPID key through the
 * service worker, so a push login reaches this device as a notification even when the
 * app is closed. Null wherever it cannot be had (no service worker or Push API, no
 * notification permission, no push service reachable): the live connection and the
 * signed poll deliver while the app is open.
 */
export async function subscribeToWebPush(vapidPublicKey: string): Promise<object | null> {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) return null;
  if (Notification.permission !== "granted") return null;
  // `ready` never settles where no worker is registered (a page outside /app/).
  const registration = await Promise.race([navigator.serviceWorker.ready, new Promise<null>((resolve) => setTimeout(() => resolve(null), 5_000))]);
  if (!registration) return null;
  return subscribeWith(registration.pushManager, vapidPublicKey);
}

/** What subscribing needs of a registration's PushManager, in a page or in the service worker. */
export interface PushManagerLike {
  getSubscription(): Promise<PushSubscription | null>;
  subscribe(options: PushSubscriptionOptionsInit): Promise<PushSubscription>;
}

/**
 * The subscription for this server's VAPID key: the one the browser has when it was made
 * with that key, else a new one. Null when the browser gives none.
 */
export async function subscribeWith(pushManager: PushManagerLike, vapidPublicKey: string): Promise<object | null> {
  const applicationServerKey = Uint8Array.from(atob(vapidPublicKey.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  try {
    const existing = await pushManager.getSubscription();
    const existingKey = existing?.options.applicationServerKey ? new Uint8Array(existing.options.applicationServerKey) : null;
    if (existing && existingKey?.length === applicationServerKey.length && existingKey.every((byte, index) => byte === applicationServerKey[index])) return existing.toJSON();
    // One subscription per app: one made with another key cannot carry this server's messages.
    await existing?.unsubscribe();
    return (await pushManager.subscribe({ userVisibleOnly: true, applicationServerKey })).toJSON();
  } catch (error) {
    console.warn("push: no Web Push subscription", error);
    return null;
  }
}

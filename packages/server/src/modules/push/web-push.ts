import type { Agent } from "node:https";
import webpush from "web-push";
import { sealingContext } from "../../crypto/keyring.js";
import type { CoreDeps } from "../../deps.js";

/**
 * Web Push (RFC 8030) with VAPID (RFC 8292) and message encryption (RFC 8291,
 * aes128gcm): wakes a device whose app is not running, through the push service its
 * browser subscribed with (FCM, Mozilla's, Apple's). The payload is encrypted for the
 * device alone; the push service sees only who sent it (the VAPID key) and its size.
 *
 * One key pair serves every node (a subscription is bound to the public key it was
 * made with), kept in `server_secrets` with the private half sealed under the master
 * key. It is made on first use; two nodes making it at once agree on the first stored.
 */
export interface WebPushOptions {
  /** A mailto: or https: contact for push services (RFC 8292 section 2.1). */
  subject: string;
  /**
   * Host names of the push services messages may go to (`*.` for any subdomain). The
   * device names its push service's URL, so without this list an enrolled device could
   * make the server post to any address it can reach.
   */
  allowedHosts: string[];
  /** For a push service behind a private CA; made on first use, so a bad CA file fails sending, not start. */
  agent?: Agent | (() => Agent);
  /**
   * An HTTP proxy to reach push services through (CONNECT). Through a proxy only the
   * system's certificate authorities are trusted: the agent above is not used.
   */
  proxy?: string;
  /** How long one send may take before it counts as failed. @default 10000 */
  timeoutMs?: number;
}

export interface WebPushTarget {
  deviceId: string;
  /** The subscription as the browser gave it (JSON: endpoint and keys). */
  subscription: string;
}

export type WebPushOutcome = "sent" | "gone" | "failed" | "refused";

/**
 * Whether a push service URL is https on one of the allowed hosts, on port 443 unless
 * the entry names another (`host:port`, for a private push service).
 */
export function pushServiceAllowed(endpoint: string, allowedHosts: string[]): boolean {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return false;
  }
  if (url.protocol !== "https:" || url.username || url.password) return false;
  const host = url.hostname.toLowerCase();
  const port = url.port || "443";
  return allowedHosts.some((entry) => {
    const [name = "", entryPort = "443"] = entry.toLowerCase().split(/:(?=\d+$)/);
    if (entryPort !== port) return false;
    return name.startsWith("*.") ? host.endsWith(name.slice(1)) : host === name;
  });
}

const VAPID = "vapid";

export function createWebPush(deps: Pick<CoreDeps, "db" | "keyring" | "clock">, options: WebPushOptions) {
  const { db, keyring, clock } = deps;
  let madeAgent: Agent | undefined;
  const agent = () => (typeof options.agent === "function" ? (madeAgent ??= options.agent()) : options.agent);
  let keys: Promise<{ publicKey: string; privateKey: string }> | undefined;

  async function loadOrMakeKeys(): Promise<{ publicKey: string; privateKey: string }> {
    const read = () => db.selectFrom("server_secrets").selectAll().where("name", "=", VAPID).executeTakeFirst();
    let row = await read();
    if (!row) {
      const made = webpush.generateVAPIDKeys();
      const sealed = keyring.encrypt(Buffer.from(made.privateKey, "utf8"), sealingContext.serverSecret(VAPID));
      await db
        .insertInto("server_secrets")
        .values({ name: VAPID, public_value: made.publicKey, secret_ciphertext: sealed.ciphertext, secret_key_id: sealed.keyId, created_at: clock.nowMs() })
        .onConflict((conflict) => conflict.column("name").doNothing())
        .execute();
      row = await read();
      if (!row) throw new Error("the Web Push key pair was not stored");
    }
    const privateKey = keyring.decrypt(row.secret_ciphertext, row.secret_key_id, sealingContext.serverSecret(VAPID)).toString("utf8");
    return { publicKey: row.public_value, privateKey };
  }

  const vapidKeys = () => {
    keys ??= loadOrMakeKeys().catch((error: unknown) => {
      keys = undefined;
      throw error;
    });
    return keys;
  };

  return {
    /** Whether messages may go to this push service (TESSERA_WEB_PUSH_HOSTS). */
    accepts: (endpoint: string) => pushServiceAllowed(endpoint, options.allowedHosts),

    /** The public key devices subscribe with (base64url, uncompressed P-256 point). */
    async publicKey(): Promise<string> {
      return (await vapidKeys()).publicKey;
    },

    /**
     * Sends one encrypted message to each target. A subscription the push service no
     * longer knows (404, 410) is forgotten, so it is not tried again; other failures
     * are reported and the live connection and the signed poll still deliver.
     */
    async send(targets: WebPushTarget[], payload: Record<string, unknown>, ttlSeconds: number): Promise<Array<{ deviceId: string; outcome: WebPushOutcome; detail?: string }>> {
      if (targets.length === 0) return [];
      const { publicKey, privateKey } = await vapidKeys();
      const body = JSON.stringify(payload);
      return Promise.all(
        targets.map(async (target) => {
          const subscription = JSON.parse(target.subscription) as webpush.PushSubscription;
          if (!pushServiceAllowed(subscription.endpoint, options.allowedHosts)) {
            return { deviceId: target.deviceId, outcome: "refused" as const, detail: `push service ${subscription.endpoint} is not in TESSERA_WEB_PUSH_HOSTS` };
          }
          try {
            await webpush.sendNotification(subscription, body, {
              vapidDetails: { subject: options.subject, publicKey, privateKey },
              TTL: Math.max(0, Math.floor(ttlSeconds)),
              urgency: "high",
              contentEncoding: "aes128gcm",
              timeout: options.timeoutMs ?? 10_000,
              ...(options.proxy ? { proxy: options.proxy } : agent() ? { agent: agent() } : {}),
            });
            return { deviceId: target.deviceId, outcome: "sent" as const };
          } catch (error) {
            const status = (error as { statusCode?: number }).statusCode;
            if (status === 404 || status === 410) {
              await db.updateTable("devices").set({ push_subscription: null }).where("device_id", "=", target.deviceId).where("push_subscription", "=", target.subscription).execute();
              return { deviceId: target.deviceId, outcome: "gone" as const, detail: `push service answered ${status}` };
            }
            return { deviceId: target.deviceId, outcome: "failed" as const, detail: status ? `push service answered ${status}` : (error as Error).message };
          }
        }),
      );
    },
  };
}

export type WebPush = ReturnType<typeof createWebPush>;

import { EventEmitter } from "node:events";

/**
 * Wakes whoever waits on a challenge (a REST long poll, a RADIUS request in hold mode)
 * or on a device's queue (the app's long poll), and tells the API key cache and the
 * RADIUS client table that the applications changed. Other nodes hear the same through
 * `connect` (PostgreSQL LISTEN/NOTIFY, modules/push/notify.ts); should a notification be
 * lost, waiters also look at the database every half second and the applications are
 * read again every ten seconds.
 */
/** What one node tells the others (PostgreSQL NOTIFY), and hears from them. */
export type HubEvent = { kind: "challenge"; id: string } | { kind: "devices"; ids: string[] } | { kind: "applications" };

export function createChallengeHub() {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let broadcast: ((event: HubEvent) => void) | null = null;
  const deliver = (event: HubEvent) => {
    if (event.kind === "challenge") events.emit(`challenge:${event.id}`);
    else if (event.kind === "applications") events.emit("applications");
    else for (const deviceId of event.ids) events.emit(`device:${deviceId}`);
  };
  return {
    challengeChanged(challengeId: string): void {
      deliver({ kind: "challenge", id: challengeId });
      broadcast?.({ kind: "challenge", id: challengeId });
    },
    deviceHasWork(deviceIds: string[]): void {
      deliver({ kind: "devices", ids: deviceIds });
      broadcast?.({ kind: "devices", ids: deviceIds });
    },
    /** An application was created, changed or deleted: every node reads them again (API keys, RADIUS clients). */
    applicationsChanged(): void {
      deliver({ kind: "applications" });
      broadcast?.({ kind: "applications" });
    },
    /** Calls `listener` on every change of the applications, here or on another node, until the returned function is called. */
    onApplicationsChanged(listener: () => void): () => void {
      events.on("applications", listener);
      return () => events.off("applications", listener);
    },
    /** Wires the hub to other nodes: `send` tells them; the returned function is for what they tell us. */
    connect(send: (event: HubEvent) => void): (event: HubEvent) => void {
      broadcast = send;
      return deliver;
    },
    /** Calls `listener` each time the device has work, until the returned function is called. */
    onDeviceWork(deviceId: string, listener: () => void): () => void {
      events.on(`device:${deviceId}`, listener);
      return () => events.off(`device:${deviceId}`, listener);
    },
    /** Resolves when told, when `check` says so, or after `timeoutMs`, whichever comes first. */
    async waitUntil<T>(key: string, timeoutMs: number, check: () => Promise<T | null>, pollMs = 500, signal?: AbortSignal): Promise<T | null> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        // Nobody is waiting any more (the client went): no more looks.
        if (signal?.aborted) return null;
        // Listening before the check: an event while the check reads the database
        // would otherwise be missed, and the waiter would sleep until the next poll.
        let woken = false;
        let wake: () => void = () => {
          woken = true;
        };
        const listener = () => wake();
        events.on(key, listener);
        let timer: NodeJS.Timeout | undefined;
        try {
          const found = await check();
          if (found !== null) return found;
          const left = deadline - Date.now();
          if (left <= 0) return null;
          if (!woken) {
            await new Promise<void>((resolve) => {
              wake = () => resolve();
              timer = setTimeout(resolve, Math.min(left, pollMs));
              signal?.addEventListener("abort", listener, { once: true });
              if (signal?.aborted) resolve();
            });
          }
        } finally {
          clearTimeout(timer);
          events.off(key, listener);
          signal?.removeEventListener("abort", listener);
        }
      }
    },
  };
}

export type ChallengeHub = ReturnType<typeof createChallengeHub>;

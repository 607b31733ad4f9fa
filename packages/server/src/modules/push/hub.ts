import { EventEmitter } from "node:events";

/**
 * Wakes whoever waits on a challenge (a REST long poll, a RADIUS request in hold mode)
 * or on a device's queue (the app's long poll) in this process. Waiters on other nodes
 * are not told here: they also look at the database at a short interval, which is what
 * makes several nodes on one PostgreSQL work (LISTEN/NOTIFY would only make it faster).
 */
export function createChallengeHub() {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return {
    challengeChanged(challengeId: string): void {
      events.emit(`challenge:${challengeId}`);
    },
    deviceHasWork(deviceIds: string[]): void {
      for (const deviceId of deviceIds) events.emit(`device:${deviceId}`);
    },
    /** Resolves when told, when `check` says so, or after `timeoutMs`, whichever comes first. */
    async waitUntil<T>(key: string, timeoutMs: number, check: () => Promise<T | null>, pollMs = 500): Promise<T | null> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = await check();
        if (found !== null) return found;
        const left = deadline - Date.now();
        if (left <= 0) return null;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            events.off(key, done);
            resolve();
          };
          const timer = setTimeout(done, Math.min(left, pollMs));
          events.once(key, done);
        });
      }
    },
  };
}

export type ChallengeHub = ReturnType<typeof createChallengeHub>;

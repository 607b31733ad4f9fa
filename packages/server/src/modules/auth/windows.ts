import type { Clock } from "../../clock.js";

/** How often, at most, windows that have ended are dropped. */
const SWEEP_INTERVAL_MS = 60_000;

/**
 * Counts per key over fixed windows, each starting at its key's first count: what the
 * guessing limits of a single server keep in memory. Every operation is synchronous, so
 * a check and the count that follows it cannot interleave with another attempt's, and
 * time is the clock's, like everything else the services do.
 */
export function fixedWindows(clock: Clock, windowMs: number) {
  const entries = new Map<string, { count: number; endsAt: number }>();
  let nextSweep = 0;
  const live = (key: string) => {
    const entry = entries.get(key);
    return entry && entry.endsAt > clock.nowMs() ? entry : undefined;
  };
  return {
    /** The key's count in its current window; 0 when it has none. */
    count: (key: string): number => live(key)?.count ?? 0,
    /** Milliseconds until the key's window ends; 0 when it has none. */
    msLeft: (key: string): number => Math.max(0, (live(key)?.endsAt ?? 0) - clock.nowMs()),
    add(key: string): void {
      const now = clock.nowMs();
      if (now >= nextSweep) {
        nextSweep = now + SWEEP_INTERVAL_MS;
        for (const [stale, entry] of entries) if (entry.endsAt <= now) entries.delete(stale);
      }
      const entry = live(key);
      if (entry) entry.count += 1;
      else entries.set(key, { count: 1, endsAt: now + windowMs });
    },
    /** One count back (an attempt that turned out not to be a failure). */
    remove(key: string): void {
      const entry = live(key);
      if (entry && entry.count > 0) entry.count -= 1;
    },
    /** Drops the key's window; returns what `restore` puts back. */
    forget(key: string): (() => void) {
      const entry = entries.get(key);
      entries.delete(key);
      return () => {
        if (entry) entries.set(key, entry);
      };
    },
  };
}

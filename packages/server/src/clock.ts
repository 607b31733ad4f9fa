/** Time is passed in, never read from a global: tests move it, services ask it. */
export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };

export function fixedClock(startMs: number): Clock & { advance(ms: number): void } {
  let current = startMs;
  return {
    nowMs: () => current,
    advance(ms: number) {
      current += ms;
    },
  };
}

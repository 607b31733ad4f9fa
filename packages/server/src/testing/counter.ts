/**
 * Waiting on a count in tests: a test server (SMTP, Web Push) calls `changed()` when it
 * took something, and a test waits until `count()` reaches what it expects, or fails
 * after a timeout. The count is the server's own (a list a test may also empty).
 */
export function waitableCount(what: string, count: () => number) {
  const waiters: Array<() => void> = [];
  return {
    changed(): void {
      for (const wake of waiters.splice(0)) wake();
    },
    async reach(expected: number, timeoutMs: number): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (count() < expected) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`expected ${expected} ${what}, got ${count()}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
  };
}

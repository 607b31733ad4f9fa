/** mulberry32: a small seeded generator, so that a failing run can be replayed. */
export function seededRandom(seedValue: number) {
  let state = seedValue >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (maxExclusive: number) => Math.floor(next() * maxExclusive);
  return {
    /** Uniform in [0, 1). */
    next,
    int,
    between: (min: number, max: number) => min + int(max - min + 1),
    pick: <T>(items: readonly T[]): T => items[int(items.length)]!,
    bytes: (length: number) => Buffer.from(Array.from({ length }, () => int(256))),
  };
}
export type Random = ReturnType<typeof seededRandom>;

/**
 * The seed of a fuzz test's run: TESSERA_FUZZ_SEED when set, to replay a failure, else a
 * new one. Tests print it with every failure.
 */
export function fuzzSeed(): number {
  const given = process.env.TESSERA_FUZZ_SEED;
  const seed = given === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(given);
  if (!Number.isSafeInteger(seed)) throw new Error(`TESSERA_FUZZ_SEED must be a whole number, got ${given}`);
  return seed;
}

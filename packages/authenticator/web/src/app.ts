import type { AppPlatform, Authenticator } from "../../src/core/authenticator.ts";
import type { StateStore } from "../../src/core/store.ts";

/** What every screen gets: the core, its state, and a way to move between screens. */
export interface AppContext {
  core: Authenticator;
  store: StateStore;
  platform: AppPlatform;
  navigate(hash: string): void;
}

/** One screen: its header, its content, and what to stop when it is left. */
export interface View {
  title: string;
  /** The screen the back arrow leads to; none on the top screens. */
  back?: string;
  /** Shows the settings button in the header. */
  settings?: boolean;
  body: HTMLElement;
  dispose?(): void;
}

/** Runs `tick` now and then at each turn of the second, until stopped. */
export function everySecond(tick: () => Promise<void>): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const run = async () => {
    try {
      await tick();
    } finally {
      if (!stopped) timer = setTimeout(() => void run(), 1000 - (Date.now() % 1000) + 20);
    }
  };
  void run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

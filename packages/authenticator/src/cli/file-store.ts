import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { emptyState, type AuthenticatorState, type StateStore } from "../core/store.js";

/** Where the CLI keeps its keys: `TESSERA_AUTHENTICATOR_HOME`, else ~/.config/tessera-authenticator. */
export function defaultHome(environment: NodeJS.ProcessEnv = process.env): string {
  return environment.TESSERA_AUTHENTICATOR_HOME ?? path.join(environment.XDG_CONFIG_HOME ?? path.join(os.homedir(), ".config"), "tessera-authenticator");
}

/**
 * The CLI's key file: JSON, mode 0600 in a 0700 directory, replaced atomically (written
 * beside it, then renamed) so a crash never leaves half a file of keys.
 */
export function createFileStore(home: string): StateStore {
  const file = path.join(home, "state.json");
  return {
    async load(): Promise<AuthenticatorState> {
      if (!existsSync(file)) return emptyState();
      return JSON.parse(readFileSync(file, "utf8")) as AuthenticatorState;
    },
    async save(state: AuthenticatorState): Promise<void> {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      const temporary = `${file}.${process.pid}.tmp`;
      writeFileSync(temporary, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
      chmodSync(temporary, 0o600);
      renameSync(temporary, file);
    },
  };
}

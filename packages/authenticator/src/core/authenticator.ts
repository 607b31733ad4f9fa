import {
  canonicalRequest,
  deriveTokenKey,
  exportPublicKey,
  generateEnrollmentKeys,
  importAgreementPublicKey,
  sha256Base64url,
  signRequest,
  totp,
  type OtpAlgorithm,
  type WebCryptoKey,
} from "@tessera/otp";
import { parseEnrollmentLink } from "./link.js";
import type { AuthenticatorState, CryptoKeyLike, Jwk, KeyVault, StateStore, StoredToken } from "./store.js";

export interface AppPlatform {
  os: string;
  osVersion?: string | null;
  deviceType: string;
  appVersion: string;
}

/** A push login as the app shows it: the application, where from, when, and the number to match. */
export interface PushChallenge {
  id: string;
  server: string;
  serials?: string[];
  resourceName: string;
  source: string;
  numberToMatch: string;
  createdAt: string;
  expiresAt: string;
  status: string;
}

export interface AuthenticatorOptions {
  store: StateStore;
  /** Default: keys kept with the state (the CLI's file). */
  vault?: KeyVault;
  fetch: typeof fetch;
  platform: AppPlatform;
  nowMs?: () => number;
  /**
   * Web Push, where the platform has it (the web app's service worker): subscribes with
   * the server's VAPID public key and gives the subscription (PushSubscription.toJSON()),
   * or null when the platform cannot. The server then wakes the app for a push login
   * even when it is not running. The CLI has none: it listens while it runs.
   */
  webPush?: { subscribe(vapidPublicKey: string): Promise<object | null> };
}

export class AuthenticatorError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = "AuthenticatorError";
  }
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;
/** The JWK type of the platform's WebCrypto (DOM in browsers, node:crypto in Node). */
type PlatformJwk = Extract<Parameters<typeof globalThis.crypto.subtle.importKey>[1], { kty?: string }>;

/**
 * The tessera app's core, the same for the command-line client and the web app: it
 * enrolls from an auto-enrollment link with the key agreement (the OTP key is derived
 * on both sides and never travels), computes passcodes, and signs its requests to the
 * server with its device key.
 */
/** Keys kept in the state itself: the signing key as JWK, OTP keys as base64 (the CLI's 0600 file). */
export function stateVault(): KeyVault {
  // Importing the JWK and exporting the public half cost more than the signature itself:
  // done once per key, not for every signed request.
  let imported: { privateJwk: Jwk; key: { privateKey: CryptoKeyLike; publicRaw: string } } | null = null;
  return {
    async signingKey(state) {
      if (!state.device.signingKey) {
        const pair = await globalThis.crypto.subtle.generateKey(ECDSA, true, ["sign", "verify"]);
        state.device.signingKey = {
          privateJwk: (await globalThis.crypto.subtle.exportKey("jwk", pair.privateKey)) as Jwk,
          publicJwk: (await globalThis.crypto.subtle.exportKey("jwk", pair.publicKey)) as Jwk,
        };
      }
      const { privateJwk, publicJwk } = state.device.signingKey;
      if (imported && imported.privateJwk.d === privateJwk.d) return imported.key;
      const privateKey = await globalThis.crypto.subtle.importKey("jwk", privateJwk as PlatformJwk, ECDSA, false, ["sign"]);
      const publicKey = await globalThis.crypto.subtle.importKey("jwk", publicJwk as PlatformJwk, ECDSA, true, ["verify"]);
      const key = { privateKey, publicRaw: await exportPublicKey(publicKey) };
      imported = { privateJwk, key };
      return key;
    },
    sealOtpKey: async (key) => base64(key),
    openOtpKey: async (sealed) => fromBase64(sealed),
  };
}

export function createAuthenticator(options: AuthenticatorOptions) {
  const now = options.nowMs ?? (() => Date.now());
  const vault = options.vault ?? stateVault();
  const signingKey = (state: AuthenticatorState) => vault.signingKey(state);

  async function call(server: string, method: string, path: string, body: unknown, signedBy?: { deviceId: string; key: WebCryptoKey }) {
    const raw = body === undefined ? "" : JSON.stringify(body);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (signedBy) {
      const timestampMs = now();
      const canonical = canonicalRequest({ method, path, bodySha256Base64url: await sha256Base64url(raw), timestampMs, deviceId: signedBy.deviceId });
      headers["x-tessera-device-id"] = signedBy.deviceId;
      headers["x-tessera-timestamp"] = String(timestampMs);
      headers["x-tessera-signature"] = await signRequest(signedBy.key, canonical);
    }
    const response = await options.fetch(`${server}${path}`, { method, headers, ...(raw ? { body: raw } : {}) });
    const json = (await response.json().catch(() => null)) as Record<string, unknown> | null;
    if (!response.ok) {
      const error = (json?.error ?? {}) as { code?: string; message?: string };
      throw new AuthenticatorError(error.message ?? `the server answered ${response.status}`, error.code ?? `HTTP_${response.status}`);
    }
    return json ?? {};
  }

  /** A Web Push subscription for this server, or nothing: push still arrives while the app runs. */
  async function pushSubscriptionFor(server: string): Promise<object | null> {
    if (!options.webPush) return null;
    try {
      const { publicKey } = (await call(server, "GET", "/device/v1/web-push", undefined)) as { publicKey: string };
      return await options.webPush.subscribe(publicKey);
    } catch {
      return null;
    }
  }

  function rememberEndpoint(state: AuthenticatorState, server: string, subscription: object | null): void {
    const endpoint = (subscription as { endpoint?: string } | null)?.endpoint;
    const endpoints = { ...state.device.webPushEndpoints };
    if (endpoint) endpoints[server] = endpoint;
    else delete endpoints[server];
    state.device.webPushEndpoints = endpoints;
  }

  /**
   * Changes the state as it is now, not as it was read earlier: the web app and its
   * service worker both save it, each whole.
   */
  async function saveLatest(change: (latest: AuthenticatorState) => void): Promise<void> {
    const latest = await options.store.load();
    change(latest);
    await options.store.save(latest);
  }

  function find(state: AuthenticatorState, serial?: string): StoredToken {
    const token = serial ? state.tokens.find((t) => t.serial === serial) : state.tokens[0];
    if (!token) throw new AuthenticatorError(serial ? `no token ${serial} here` : "no token enrolled yet", "NO_TOKEN");
    return token;
  }

  return {
    /** Enrolls the token of an auto-enrollment link; `pushPermitted: false` is the user's "No Thanks". */
    async enroll(link: string, input: { pushPermitted: boolean }): Promise<StoredToken & { pushApplications: string[] }> {
      const parsed = parseEnrollmentLink(link);
      if (!parsed.ok) throw new AuthenticatorError(parsed.problem, "LINK_INVALID");
      const { server, code } = parsed.value;
      const state = await options.store.load();
      const signing = await signingKey(state);
      const agreement = (await generateEnrollmentKeys()).agreement;
      const pushSubscription = input.pushPermitted ? await pushSubscriptionFor(server) : null;
      const started = (await call(server, "POST", "/device/v1/enrollments", {
        code,
        agreementPublicKey: await exportPublicKey(agreement.publicKey),
        signingPublicKey: signing.publicRaw,
        ...(state.device.deviceIds[server] ? { deviceId: state.device.deviceIds[server] } : {}),
        platform: options.platform,
        pushPermitted: input.pushPermitted,
        ...(pushSubscription ? { pushSubscription } : {}),
      })) as { enrollmentId: string; deviceId: string; serial: string; serverPublicKey: string; otp: { algorithm: OtpAlgorithm; digits: 6 | 8; periodSeconds: number }; virtualServer: { id: string; name: string }; user: { userId: string } };
      const peer = await importAgreementPublicKey(started.serverPublicKey);
      if (!peer.ok) throw new AuthenticatorError("the server's key is not usable", "SERVER_KEY_INVALID");
      const key = await deriveTokenKey({ privateKey: agreement.privateKey, peerPublicKey: peer.key, serial: started.serial, enrollmentCode: code, algorithm: started.otp.algorithm });
      const passcode = totp(key, { atMs: now(), periodSeconds: started.otp.periodSeconds, digits: started.otp.digits, algorithm: started.otp.algorithm });
      const confirmed = (await call(server, "POST", `/device/v1/enrollments/${started.enrollmentId}/confirm`, { otp: passcode }, { deviceId: started.deviceId, key: signing.privateKey })) as {
        pushApplications: string[];
      };
      const token: StoredToken = {
        serial: started.serial,
        server,
        virtualServer: started.virtualServer,
        userId: started.user.userId,
        key: await vault.sealOtpKey(key),
        algorithm: started.otp.algorithm,
        digits: started.otp.digits,
        periodSeconds: started.otp.periodSeconds,
        enrolledAt: new Date(now()).toISOString(),
      };
      key.fill(0);
      state.device.deviceIds[server] = started.deviceId;
      state.device.autosendPasscode = input.pushPermitted;
      rememberEndpoint(state, server, pushSubscription);
      state.tokens = [...state.tokens.filter((t) => t.serial !== token.serial), token];
      await options.store.save(state);
      return { ...token, pushApplications: confirmed.pushApplications };
    },

    async list(): Promise<StoredToken[]> {
      return (await options.store.load()).tokens;
    },

    /** The current passcode of a token (the first one when no serial is given) and the seconds it stays valid. */
    async code(serial?: string): Promise<{ serial: string; passcode: string; secondsLeft: number }> {
      const token = find(await options.store.load(), serial);
      const at = now();
      const passcode = totp(await vault.openOtpKey(token.key), { atMs: at, periodSeconds: token.periodSeconds, digits: token.digits, algorithm: token.algorithm });
      return { serial: token.serial, passcode, secondsLeft: token.periodSeconds - (Math.floor(at / 1000) % token.periodSeconds) };
    },

    /** "Autosend Passcode" on or off, told to every server this device is enrolled with. */
    async setAutosend(on: boolean): Promise<Array<{ server: string; pushNow: string }>> {
      const state = await options.store.load();
      const signing = await signingKey(state);
      const results = [];
      const endpoints: Array<{ server: string; subscription: object | null }> = [];
      for (const [server, deviceId] of Object.entries(state.device.deviceIds)) {
        if (!state.tokens.some((token) => token.server === server)) continue;
        // Turning push on (again) renews the Web Push subscription; turning it off drops it.
        const pushSubscription = options.webPush ? (on ? await pushSubscriptionFor(server) : null) : undefined;
        const body = { autosendPasscode: on, ...(pushSubscription === undefined || (on && pushSubscription === null) ? {} : { pushSubscription }) };
        const answer = (await call(server, "PUT", `/device/v1/devices/${deviceId}/settings`, body, { deviceId, key: signing.privateKey })) as { pushNow: string };
        if (pushSubscription !== undefined) endpoints.push({ server, subscription: pushSubscription });
        results.push({ server, pushNow: answer.pushNow });
      }
      await saveLatest((latest) => {
        latest.device.autosendPasscode = on;
        // A signing key the state's own vault (the CLI's) made just now is kept too.
        latest.device.signingKey ??= state.device.signingKey;
        endpoints.forEach(({ server, subscription }) => rememberEndpoint(latest, server, subscription));
      });
      return results;
    },

    /**
     * Gives each server the Web Push subscription again where it changed since it was
     * last sent (push services renew them, a browser may drop one). The web app calls
     * this when it starts, and its service worker when the browser says the subscription
     * changed; nothing is sent when nothing changed or push is off. The subscription goes
     * alone: a server keeps it only while Autosend Passcode is on there, so a renewal
     * that crosses the user turning it off changes nothing.
     */
    async renewWebPush(): Promise<Array<{ server: string }>> {
      if (!options.webPush) return [];
      const state = await options.store.load();
      if (!state.device.autosendPasscode) return [];
      const renewed: Array<{ server: string; pushSubscription: object }> = [];
      for (const [server, deviceId] of Object.entries(state.device.deviceIds)) {
        if (!state.tokens.some((token) => token.server === server)) continue;
        const pushSubscription = await pushSubscriptionFor(server);
        const endpoint = (pushSubscription as { endpoint?: string } | null)?.endpoint;
        if (!pushSubscription || !endpoint || state.device.webPushEndpoints?.[server] === endpoint) continue;
        // Turned off meanwhile (in the app, while its worker renews): nothing to send.
        if (!(await options.store.load()).device.autosendPasscode) break;
        const signing = await signingKey(state);
        const answer = (await call(server, "PUT", `/device/v1/devices/${deviceId}/settings`, { pushSubscription }, { deviceId, key: signing.privateKey })) as { pushNow: string };
        if (answer.pushNow === "enabled") renewed.push({ server, pushSubscription });
      }
      if (renewed.length === 0) return [];
      // The web app and its service worker may both renew, and the app may enroll
      // meanwhile: the endpoints go into the state as it is now, not as it was read.
      await saveLatest((latest) => renewed.forEach(({ server, pushSubscription }) => rememberEndpoint(latest, server, pushSubscription)));
      return renewed.map(({ server }) => ({ server }));
    },

    /**
     * The signed poll: push logins waiting for this device on every server it is
     * enrolled with; waits up to `waitSeconds` on the first server with none pending.
     */
    async pendingChallenges(waitSeconds = 25): Promise<PushChallenge[]> {
      const state = await options.store.load();
      const signing = await signingKey(state);
      const found: PushChallenge[] = [];
      for (const [server, deviceId] of Object.entries(state.device.deviceIds)) {
        if (!state.tokens.some((token) => token.server === server)) continue;
        const answer = (await call(server, "GET", `/device/v1/devices/${deviceId}/challenges?wait=${waitSeconds}`, undefined, { deviceId, key: signing.privateKey })) as { items: Array<Omit<PushChallenge, "server">> };
        found.push(...answer.items.map((item) => ({ ...item, server })));
      }
      return found;
    },

    /**
     * The live connection while the app runs: a signed event stream per server that
     * delivers each push login as it comes, and `onEnded` when one it delivered was
     * answered (here or on another device), expired or was cancelled. Reconnects after a
     * break; where the stream cannot be had, falls back to the signed poll. Runs until
     * `signal` aborts.
     */
    async watchChallenges(
      onChallenge: (challenge: PushChallenge) => Promise<void> | void,
      watch: { signal?: AbortSignal; onEnded?: (ended: { id: string; server: string }) => void } = {},
    ): Promise<void> {
      const state = await options.store.load();
      const signing = await signingKey(state);
      const servers = Object.entries(state.device.deviceIds).filter(([server]) => state.tokens.some((token) => token.server === server));
      const stopped = () => watch.signal?.aborted === true;
      const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      await Promise.all(
        servers.map(async ([server, deviceId]) => {
          while (!stopped()) {
            try {
              const path = `/device/v1/devices/${deviceId}/live`;
              const timestampMs = now();
              const canonical = canonicalRequest({ method: "GET", path, bodySha256Base64url: await sha256Base64url(""), timestampMs, deviceId });
              const response = await options.fetch(`${server}${path}`, {
                headers: { accept: "text/event-stream", "x-tessera-device-id": deviceId, "x-tessera-timestamp": String(timestampMs), "x-tessera-signature": await signRequest(signing.privateKey, canonical) },
                ...(watch.signal ? { signal: watch.signal } : {}),
              });
              if (!response.ok || !response.body) throw new AuthenticatorError(`the live connection was refused (${response.status})`, `HTTP_${response.status}`);
              const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
              let buffer = "";
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buffer += value;
                let end: number;
                // Server-sent events: blocks separated by a blank line, "event:" and "data:" lines.
                while ((end = buffer.indexOf("\n\n")) >= 0) {
                  const block = buffer.slice(0, end);
                  buffer = buffer.slice(end + 2);
                  const data = block.split("\n").find((line) => line.startsWith("data: "));
                  if (block.includes("event: challenge") && data) await onChallenge({ ...(JSON.parse(data.slice(6)) as Omit<PushChallenge, "server">), server });
                  else if (block.includes("event: ended") && data) watch.onEnded?.({ id: (JSON.parse(data.slice(6)) as { id: string }).id, server });
                }
              }
            } catch (error) {
              if (stopped()) return;
              // No live connection to be had: the signed poll, once, then try again.
              if (error instanceof AuthenticatorError) {
                const answer = (await call(server, "GET", `/device/v1/devices/${deviceId}/challenges?wait=25`, undefined, { deviceId, key: signing.privateKey }).catch(() => ({ items: [] }))) as { items: Array<Omit<PushChallenge, "server">> };
                for (const item of answer.items) await onChallenge({ ...item, server });
              }
            }
            if (!stopped()) await pause(1_000);
          }
        }),
      );
    },

    /** Answers a push login; an approval carries the current passcode (autosend), signed with the device key. */
    async answerChallenge(challenge: PushChallenge, decision: "approve" | "deny" | "fraud"): Promise<{ status: string }> {
      const state = await options.store.load();
      const signing = await signingKey(state);
      const deviceId = state.device.deviceIds[challenge.server];
      if (!deviceId) throw new AuthenticatorError("this device is not enrolled with that server", "NO_TOKEN");
      let body: Record<string, string> = { decision };
      if (decision === "approve") {
        const token = state.tokens.find((t) => t.server === challenge.server && (challenge.serials ?? []).includes(t.serial));
        if (!token) throw new AuthenticatorError("no token here for that login", "NO_TOKEN");
        const passcode = totp(await vault.openOtpKey(token.key), { atMs: now(), periodSeconds: token.periodSeconds, digits: token.digits, algorithm: token.algorithm });
        body = { decision, serial: token.serial, otp: passcode };
      }
      return (await call(challenge.server, "POST", `/device/v1/challenges/${challenge.id}/answer`, body, { deviceId, key: signing.privateKey })) as { status: string };
    },

    /** Forgets a token on this device (the operator revokes it on the server). */
    async remove(serial: string): Promise<void> {
      const state = await options.store.load();
      find(state, serial);
      state.tokens = state.tokens.filter((token) => token.serial !== serial);
      await options.store.save(state);
    },
  };
}

export type Authenticator = ReturnType<typeof createAuthenticator>;


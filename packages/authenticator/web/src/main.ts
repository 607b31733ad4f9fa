import { createAuthenticator } from "../../src/core/authenticator.ts";
import type { AppContext, View } from "./app.ts";
import { tokenDetailsScreen } from "./details.ts";
import { h, icon, replaceChildren } from "./dom.ts";
import { enrollScreen } from "./enroll.ts";
import { errorNotice } from "./errors.ts";
import { platformFromUserAgent } from "./platform.ts";
import { pushScreen, startPushWatcher } from "./push.ts";
import { settingsScreen } from "./settings.ts";
import { subscribeToWebPush } from "./web-push.ts";
import { indexedDbKeyVault, indexedDbStateStore } from "./storage.ts";
import { tokenListScreen } from "./tokens.ts";

const store = indexedDbStateStore();
const platform = platformFromUserAgent(navigator.userAgent, navigator.maxTouchPoints);
const context: AppContext = {
  store,
  platform,
  core: createAuthenticator({ store, vault: indexedDbKeyVault(), fetch: fetch.bind(globalThis), platform, webPush: { subscribe: subscribeToWebPush } }),
  navigate(hash) {
    if (location.hash === hash) void render();
    else location.hash = hash;
  },
};

const header = document.getElementById("bar") as HTMLElement;
const main = document.getElementById("app") as HTMLElement;
let current: View | null = null;
let rendering = 0;

function route(hash: string): Promise<View> | View {
  const [path = "/", query = ""] = hash.replace(/^#/, "").split("?");
  if (path === "/enroll" && new URLSearchParams(query).has("code")) return enrollScreen(context);
  if (path === "/settings") return settingsScreen(context);
  const push = /^\/push\/(.+)$/.exec(path);
  if (push?.[1]) return pushScreen(context, decodeURIComponent(push[1]));
  const token = /^\/token\/(.+)$/.exec(path);
  if (token?.[1]) return tokenDetailsScreen(context, decodeURIComponent(token[1]));
  return tokenListScreen(context);
}

async function render(): Promise<void> {
  const turn = ++rendering;
  let view: View;
  try {
    view = await route(location.hash || "#/");
  } catch (error) {
    view = { title: "Tessera", body: h("div", { class: "screen" }, h("section", { class: "card" }, h("h2", {}, "Tessera could not start"), errorNotice(error))) };
  }
  if (turn !== rendering) {
    view.dispose?.();
    return;
  }
  current?.dispose?.();
  current = view;
  replaceChildren(
    header,
    view.back ? h("a", { class: "icon-button", href: view.back, "aria-label": "Back" }, icon("back")) : h("span", { class: "logo", "aria-hidden": "true" }),
    h("h1", {}, view.title),
    view.settings ? h("a", { class: "icon-button", href: "#/settings", "aria-label": "Settings" }, icon("settings")) : null,
  );
  replaceChildren(main, view.body);
  document.title = view.title === "Tessera" ? "Tessera" : `${view.title} · Tessera`;
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", () => void render());
void render();
startPushWatcher(context);
// A push service may have renewed this browser's subscription since the app last ran.
void context.core.renewWebPush().catch((error: unknown) => console.warn("push: could not renew the Web Push subscription", error));

// The app shell is cached by the service worker, so passcodes show offline too.
if ("serviceWorker" in navigator && location.pathname.startsWith("/app/")) {
  navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch((error: unknown) => console.warn("offline support is unavailable", error));
}

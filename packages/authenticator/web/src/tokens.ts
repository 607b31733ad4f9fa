import type { StoredToken } from "../../src/core/store.ts";
import { everySecond, type AppContext, type View } from "./app.ts";
import { countdownRing } from "./countdown.ts";
import { groupDigits, h, icon } from "./dom.ts";
import { errorNotice } from "./errors.ts";

/** A passcode display and its countdown, kept current by `refresh`. */
export function passcodeDisplay(context: AppContext, token: StoredToken) {
  const passcode = h("div", { class: "passcode", "data-passcode": "", "aria-live": "polite" }, "••• •••");
  const ring = countdownRing();
  return {
    passcode,
    ring: ring.element,
    async refresh() {
      const code = await context.core.code(token.serial);
      if (passcode.dataset.passcode !== code.passcode) {
        passcode.dataset.passcode = code.passcode;
        passcode.textContent = groupDigits(code.passcode);
      }
      ring.update(code.secondsLeft, token.periodSeconds);
    },
  };
}

/** `#/`: every token with its current passcode and the time to the next one. */
export async function tokenListScreen(context: AppContext): Promise<View> {
  const tokens = await context.core.list();
  if (tokens.length === 0) {
    return {
      title: "Tessera",
      settings: true,
      body: h(
        "div",
        { class: "screen" },
        h(
          "section",
          { class: "card center empty" },
          h("div", { class: "badge brand" }, icon("shield", 30)),
          h("h2", {}, "No token here yet"),
          h("p", {}, "Open the enrollment link from your email on this device to add your token."),
        ),
      ),
    };
  }
  const problem = h("div", {});
  const displays = tokens.map((token) => ({ token, display: passcodeDisplay(context, token) }));
  const body = h(
    "div",
    { class: "screen" },
    problem,
    ...displays.map(({ token, display }) =>
      h(
        "button",
        { class: "card token", type: "button", "data-token": token.serial, "aria-label": `${token.virtualServer.name}, ${token.userId}: details`, onclick: () => context.navigate(`#/token/${encodeURIComponent(token.serial)}`) },
        h("div", { class: "meta" }, h("div", { class: "issuer" }, token.virtualServer.name), display.passcode, h("div", { class: "user" }, `${token.userId} · ${token.serial}`)),
        display.ring,
      ),
    ),
    h("p", { class: "hint" }, "Tap a token for its details."),
  );
  const stop = everySecond(async () => {
    try {
      await Promise.all(displays.map(({ display }) => display.refresh()));
      problem.replaceChildren();
    } catch (error) {
      problem.replaceChildren(errorNotice(error));
    }
  });
  return { title: "Tessera", settings: true, body, dispose: stop };
}

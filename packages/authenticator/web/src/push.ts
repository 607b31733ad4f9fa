import type { PushChallenge } from "../../src/core/authenticator.ts";
import type { AppContext, View } from "./app.ts";
import { h, icon } from "./dom.ts";
import { errorNotice } from "./errors.ts";

/** Push logins the app has heard of and not yet answered, by challenge id. */
const waiting = new Map<string, PushChallenge>();
/** Those being answered here now: their end, which the answer itself causes, is no news. */
const answering = new Set<string>();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The next login still waiting to be answered, if any. */
function nextWaiting(): PushChallenge | undefined {
  const now = Date.now();
  for (const [id, challenge] of waiting) {
    if (Date.parse(challenge.expiresAt) > now) return challenge;
    waiting.delete(id);
  }
  return undefined;
}

/**
 * Listens for push logins while the app is open, over the live connection (a signed
 * event stream; the core falls back to the signed poll where it cannot be had): a login
 * opens its approval screen, or waits for the one on screen to be answered.
 */
export function startPushWatcher(context: AppContext): void {
  const loop = async () => {
    for (;;) {
      try {
        if ((await context.core.list()).length === 0) {
          await sleep(2_000);
          continue;
        }
        await context.core.watchChallenges(
          (challenge) => {
            if (waiting.has(challenge.id)) return;
            waiting.set(challenge.id, challenge);
            // Opened from its notification, the app may show this request's screen before
            // the request itself has arrived: show it again now that it has. A request on
            // screen that still waits for its answer stays there; one that ended ("No
            // longer waiting") gives way to the new one.
            const screen = `#/push/${encodeURIComponent(challenge.id)}`;
            const shown = location.hash.startsWith("#/push/") ? decodeURIComponent(location.hash.slice("#/push/".length)) : null;
            if (shown === null || shown === challenge.id || (!waiting.has(shown) && !answering.has(shown))) context.navigate(screen);
          },
          {
            // Answered on another device, expired, or the user typed the passcode instead:
            // its screen says it is no longer waiting, and Approve is gone.
            onEnded: ({ id }) => {
              void closeNotification(id);
              if (answering.has(id) || !waiting.delete(id)) return;
              const screen = `#/push/${encodeURIComponent(id)}`;
              if (location.hash === screen) context.navigate(screen);
            },
          },
        );
      } catch (error) {
        console.warn("push: cannot reach the server for sign-in requests", error);
      }
      await sleep(5_000);
    }
  };
  void loop();
}

/**
 * Takes a login's notification (shown by the service worker while the app was in the
 * background, tagged with the challenge id) out of the tray once the login has ended.
 */
async function closeNotification(id: string): Promise<void> {
  try {
    const registration = await navigator.serviceWorker?.getRegistration();
    for (const notification of (await registration?.getNotifications({ tag: id })) ?? []) notification.close();
  } catch {
    // No service worker or no notifications here: nothing to take away.
  }
}

/** `#/push/{id}`: who wants in where, the number to match, and Approve, Deny, Deny and report. */
export function pushScreen(context: AppContext, id: string): View {
  const challenge = waiting.get(id);
  if (!challenge) {
    return {
      title: "Sign-in request",
      back: "#/",
      body: h("div", { class: "screen" }, h("section", { class: "card" }, h("h2", {}, "No longer waiting"), h("p", {}, "This sign-in request was answered or has expired."))),
    };
  }
  const outcome = h("div", { "data-push-outcome": "" });
  const buttons = h("div", { class: "actions" });
  const answer = async (decision: "approve" | "deny" | "fraud") => {
    for (const button of buttons.querySelectorAll("button")) button.setAttribute("disabled", "");
    answering.add(id);
    try {
      const result = await context.core.answerChallenge(challenge, decision);
      waiting.delete(id);
      outcome.setAttribute("data-push-outcome", result.status);
      outcome.replaceChildren(
        h("p", { class: "notice ok" }, result.status === "approved" ? "Approved: you are signed in." : decision === "fraud" ? "Denied and reported to your administrator." : "Denied."),
      );
      // Another login that came meanwhile is shown next; otherwise back to the passcodes.
      setTimeout(() => {
        const next = nextWaiting();
        context.navigate(next ? `#/push/${encodeURIComponent(next.id)}` : "#/");
      }, 1500);
    } catch (error) {
      outcome.replaceChildren(errorNotice(error));
      for (const button of buttons.querySelectorAll("button")) button.removeAttribute("disabled");
    } finally {
      answering.delete(id);
    }
  };
  buttons.append(
    h("button", { class: "button", type: "button", onclick: () => void answer("approve") }, "Approve"),
    h("button", { class: "button secondary", type: "button", onclick: () => void answer("deny") }, "Deny"),
    h("button", { class: "button danger-outline", type: "button", onclick: () => void answer("fraud") }, "Deny and report"),
  );
  const when = new Date(challenge.createdAt);
  return {
    title: "Sign-in request",
    back: "#/",
    body: h(
      "div",
      { class: "screen" },
      h(
        "section",
        { class: "card center" },
        h("div", { class: "badge brand" }, icon("bell", 30)),
        h("h2", {}, `Sign in to ${challenge.resourceName}?`),
        h("p", {}, `From ${challenge.source}, at ${when.toLocaleTimeString()}.`),
        h("p", { class: "small" }, "Check that the number on the sign-in screen is this one:"),
        h("div", { class: "passcode", "data-number-to-match": challenge.numberToMatch }, challenge.numberToMatch),
        outcome,
        buttons,
        h("p", { class: "small" }, "If you did not try to sign in, deny and report it."),
      ),
    ),
  };
}

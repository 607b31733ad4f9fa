import type { PushChallenge } from "../../src/core/authenticator.ts";
import type { AppContext, View } from "./app.ts";
import { h, icon } from "./dom.ts";
import { errorNotice } from "./errors.ts";

/** Push logins the app has heard of and not yet answered, by challenge id. */
const waiting = new Map<string, PushChallenge>();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Listens for push logins while the app is open, with the signed long poll: a new one
 * opens its approval screen. Errors (offline, server away) pause the poll for a while.
 */
export function startPushWatcher(context: AppContext): void {
  const loop = async () => {
    for (;;) {
      try {
        if ((await context.core.list()).length === 0) {
          await sleep(2_000);
          continue;
        }
        const pending = await context.core.pendingChallenges(25);
        const fresh = pending.find((challenge) => !waiting.has(challenge.id));
        for (const challenge of pending) waiting.set(challenge.id, challenge);
        // A login still waiting is shown whenever no approval screen is: also one that
        // came while the previous one was on screen.
        const next = fresh ?? pending[0];
        if (next && !location.hash.startsWith("#/push/")) context.navigate(`#/push/${encodeURIComponent(next.id)}`);
        // The poll answers at once while a login it already showed is still open: wait
        // a little then, rather than ask again and again.
        if (!fresh) await sleep(pending.length === 0 ? 500 : 2_000);
      } catch (error) {
        console.warn("push: cannot reach the server for sign-in requests", error);
        await sleep(5_000);
      }
    }
  };
  void loop();
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
    try {
      const result = await context.core.answerChallenge(challenge, decision);
      waiting.delete(id);
      outcome.setAttribute("data-push-outcome", result.status);
      outcome.replaceChildren(
        h("p", { class: "notice ok" }, result.status === "approved" ? "Approved: you are signed in." : decision === "fraud" ? "Denied and reported to your administrator." : "Denied."),
      );
      setTimeout(() => context.navigate("#/"), 1500);
    } catch (error) {
      outcome.replaceChildren(errorNotice(error));
      for (const button of buttons.querySelectorAll("button")) button.removeAttribute("disabled");
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

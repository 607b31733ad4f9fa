import { AuthenticatorError } from "../../src/core/authenticator.ts";
import { parseEnrollmentLink } from "../../src/core/link.ts";
import type { AppContext, View } from "./app.ts";
import { h, icon, replaceChildren } from "./dom.ts";
import { errorNotice } from "./errors.ts";
import { thisDevice } from "./platform.ts";

type Choice = "allow" | "decline";

/** Asks the browser; only "granted" counts as the user permitting push. */
async function askNotificationPermission(): Promise<boolean> {
  if (!("Notification" in window)) return false;
  try {
    return (await Notification.requestPermission()) === "granted";
  } catch {
    return false;
  }
}

/**
 * `#/enroll?code=...`, the link of the self-enrollment page and the mail: explains, asks
 * about notifications ("No Thanks" means no Push OTP), enrolls, shows what accepts Push OTP.
 */
export function enrollScreen(context: AppContext): View {
  const link = location.href;
  const body = h("div", { class: "screen enroll" });
  const device = thisDevice(context.platform);
  const parsed = parseEnrollmentLink(link);

  const question = () => {
    const host = parsed.ok ? new URL(parsed.value.server).host : "";
    replaceChildren(
      body,
      h(
        "section",
        { class: "card intro" },
        h("div", { class: "badge brand" }, icon("shield", 30)),
        h("h2", {}, "Set up your token"),
        h("p", {}, `Tessera will show the passcodes you sign in with, on ${device}. A new passcode comes every few seconds; each works once.`),
        h(
          "ul",
          { class: "points" },
          h("li", {}, icon("check", 18), h("span", {}, "Your token's key is made on ", device, " and never leaves it.")),
          h("li", {}, icon("check", 18), h("span", {}, "Passcodes work offline, too.")),
          host ? h("li", {}, icon("check", 18), h("span", {}, "Issued by ", h("b", {}, host), ".")) : null,
        ),
      ),
      h(
        "section",
        { class: "card ask", "aria-labelledby": "ask-title" },
        h("div", { class: "badge" }, icon("bell", 28)),
        h("h2", { id: "ask-title" }, "Allow notifications?"),
        h("p", {}, "When you sign in to an application that supports it, Tessera can ask you on ", device, " to approve the sign-in with one tap, and send the passcode for you, so you need not type it (Push OTP)."),
        h("p", { class: "small" }, "You can change this later in Settings, Autosend Passcode."),
        h("button", { class: "button", type: "button", onclick: () => void enroll("allow") }, "Allow notifications"),
        h("button", { class: "button secondary", type: "button", onclick: () => void enroll("decline") }, "No Thanks"),
      ),
    );
  };

  const enroll = async (choice: Choice) => {
    const pushPermitted = choice === "allow" ? await askNotificationPermission() : false;
    replaceChildren(
      body,
      h("section", { class: "card center", "aria-busy": "true" }, h("div", { class: "spinner", role: "progressbar" }), h("h2", {}, "Setting up your token…"), h("p", {}, "This takes a moment.")),
    );
    try {
      const token = await context.core.enroll(link, { pushPermitted });
      // The enrollment code is spent: a reload must not ask again.
      history.replaceState(null, "", "#/");
      void navigator.storage?.persist?.().catch(() => false);
      succeeded(token, choice, pushPermitted);
    } catch (error) {
      failed(error);
    }
  };

  const succeeded = (token: { serial: string; userId: string; virtualServer: { name: string }; pushApplications: string[] }, choice: Choice, pushPermitted: boolean) => {
    const apps = token.pushApplications;
    replaceChildren(
      body,
      h(
        "section",
        { class: "card center success" },
        h("div", { class: "badge ok" }, icon("check", 34)),
        h("h2", {}, "You're all set"),
        h("p", {}, "Your token ", h("b", { "data-serial": token.serial }, token.serial), " is ready: passcodes for ", h("b", {}, token.userId), " at ", h("b", {}, token.virtualServer.name), " are now on ", device, "."),
      ),
      h(
        "section",
        { class: "card push-apps" },
        h("h3", {}, "Applications that accept Push OTP"),
        apps.length
          ? h("ul", { class: "apps" }, ...apps.map((name) => h("li", {}, icon("bell", 18), h("span", {}, name))))
          : h("p", {}, "None of your applications accepts Push OTP yet: sign in with the passcode shown in Tessera."),
        apps.length && !pushPermitted
          ? h(
              "p",
              { class: "small" },
              choice === "allow" ? "Notifications are blocked in this browser, so passcodes are not pushed to you." : "You chose not to get notifications.",
              " Turn on Autosend Passcode in Settings to have passcodes sent here.",
            )
          : null,
        apps.length && pushPermitted ? h("p", { class: "small" }, "When you sign in to one of them, approve the sign-in here: the passcode is sent for you.") : null,
      ),
      h("button", { class: "button", type: "button", onclick: () => context.navigate("#/") }, "Show my passcode"),
    );
  };

  const failed = (error: unknown) => {
    replaceChildren(
      body,
      h(
        "section",
        { class: "card" },
        h("div", { class: "badge danger" }, icon("alert", 28)),
        h("h2", {}, "Enrollment did not work"),
        errorNotice(error),
        h("button", { class: "button", type: "button", onclick: question }, "Try again"),
        h("button", { class: "button secondary", type: "button", onclick: () => context.navigate("#/") }, "Go to my tokens"),
      ),
    );
  };

  if (parsed.ok) question();
  else failed(new AuthenticatorError(parsed.problem, "LINK_INVALID"));
  return { title: "Add a token", body };
}

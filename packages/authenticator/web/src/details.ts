import { everySecond, type AppContext, type View } from "./app.ts";
import { h, icon } from "./dom.ts";
import { errorNotice } from "./errors.ts";
import { passcodeDisplay } from "./tokens.ts";

function row(label: string, value: string, name: string): HTMLElement {
  return h("div", { class: "row" }, h("dt", {}, label), h("dd", { "data-field": name }, value));
}

/** `#/token/{serial}`: the token's details, its passcode, and removal with confirmation. */
export async function tokenDetailsScreen(context: AppContext, serial: string): Promise<View> {
  const token = (await context.core.list()).find((candidate) => candidate.serial === serial);
  if (!token) {
    return {
      title: "Token",
      back: "#/",
      body: h("div", { class: "screen" }, h("section", { class: "card" }, h("h2", {}, "No such token"), h("p", {}, `Token ${serial} is not on this device.`))),
    };
  }
  const display = passcodeDisplay(context, token);
  const problem = h("div", {});
  const copyLabel = h("span", {}, "Copy");
  const copy = h("button", { class: "chip", type: "button", onclick: () => void copyPasscode() }, icon("copy", 16), copyLabel);
  const copyPasscode = async () => {
    try {
      await navigator.clipboard.writeText(display.passcode.dataset.passcode ?? "");
      copyLabel.textContent = "Copied";
    } catch {
      copyLabel.textContent = "Copy not allowed";
    }
    setTimeout(() => (copyLabel.textContent = "Copy"), 2000);
  };
  const confirmation = removalDialog(context, token.serial, token.virtualServer.name, token.userId);
  const body = h(
    "div",
    { class: "screen details" },
    problem,
    h("section", { class: "card current" }, h("div", { class: "meta" }, h("div", { class: "label" }, "Current passcode"), display.passcode, copy), display.ring),
    h(
      "section",
      { class: "card" },
      h(
        "dl",
        { class: "rows" },
        row("Serial", token.serial, "serial"),
        row("OTP mode", "TOTP", "mode"),
        row("Digits", String(token.digits), "digits"),
        row("Period", `${token.periodSeconds} seconds`, "period"),
        row("Algorithm", token.algorithm, "algorithm"),
        row("Virtual server", token.virtualServer.name, "virtualServer"),
        row("User", token.userId, "user"),
        row("Server", new URL(token.server).host, "server"),
        row("Enrolled", new Date(token.enrolledAt).toLocaleString(), "enrolledAt"),
      ),
    ),
    h("button", { class: "button danger-outline", type: "button", onclick: () => confirmation.open() }, icon("trash", 18), "Remove from this device"),
    confirmation.element,
  );
  const stop = everySecond(async () => {
    try {
      await display.refresh();
      problem.replaceChildren();
    } catch (error) {
      problem.replaceChildren(errorNotice(error));
    }
  });
  return { title: "Token details", back: "#/", body, dispose: stop };
}

function removalDialog(context: AppContext, serial: string, virtualServerName: string, userId: string) {
  const problem = h("div", {});
  const close = () => element.classList.remove("open");
  const remove = async () => {
    try {
      await context.core.remove(serial);
      close();
      context.navigate("#/");
    } catch (error) {
      problem.replaceChildren(errorNotice(error));
    }
  };
  const element: HTMLDivElement = h(
    "div",
    { class: "backdrop", onclick: (event: Event) => event.target === element && close() },
    h(
      "div",
      { class: "sheet", role: "dialog", "aria-modal": "true", "aria-labelledby": "remove-title" },
      h("h2", { id: "remove-title" }, "Remove this token?"),
      h("p", {}, "Passcodes for ", h("b", {}, userId), " at ", h("b", {}, virtualServerName), ` (token ${serial}) will be gone from this device. To sign in with a token again, you will need a new enrollment from your administrator.`),
      problem,
      h("button", { class: "button danger", type: "button", onclick: () => void remove() }, "Remove"),
      h("button", { class: "button secondary", type: "button", onclick: close }, "Cancel"),
    ),
  );
  return { element, open: () => element.classList.add("open") };
}

import type { AppContext, View } from "./app.ts";
import { h } from "./dom.ts";
import { errorNotice } from "./errors.ts";
import { APP_VERSION } from "./platform.ts";

function notificationState(): string {
  if (!("Notification" in window)) return "not supported by this browser";
  return { granted: "allowed", denied: "blocked", default: "not asked yet" }[Notification.permission];
}

/** `#/settings`: "Autosend Passcode", told to every server this device is enrolled with. */
export async function settingsScreen(context: AppContext): Promise<View> {
  const state = await context.store.load();
  const result = h("div", { "aria-live": "polite" });
  const notifications = h("span", {}, notificationState());
  const toggle = h("input", { class: "switch", type: "checkbox", role: "switch", id: "autosend", "aria-describedby": "autosend-help" });
  toggle.checked = state.device.autosendPasscode;

  const change = async () => {
    const on = toggle.checked;
    toggle.disabled = true;
    result.replaceChildren(h("div", { class: "notice info" }, on ? "Turning Autosend Passcode on…" : "Turning Autosend Passcode off…"));
    try {
      if (on && "Notification" in window && Notification.permission === "default") await Notification.requestPermission().catch(() => "default");
      notifications.textContent = notificationState();
      const told = await context.core.setAutosend(on);
      const blocked = on && "Notification" in window && Notification.permission !== "granted";
      result.replaceChildren(
        h(
          "div",
          { class: "notice ok", "data-autosend-result": on ? "on" : "off" },
          h("strong", {}, `Autosend Passcode is ${on ? "on" : "off"}.`),
          told.length === 0
            ? h("div", {}, "Saved on this device; no server to tell yet.")
            : h("ul", {}, ...told.map((answer) => h("li", {}, `${new URL(answer.server).host}: Push OTP ${answer.pushNow}`))),
          blocked ? h("div", {}, "Notifications are not allowed in this browser, so passcodes cannot reach you until you allow them.") : null,
        ),
      );
    } catch (error) {
      toggle.checked = !on;
      result.replaceChildren(errorNotice(error));
    } finally {
      toggle.disabled = false;
    }
  };
  toggle.addEventListener("change", () => void change());

  const platform = context.platform;
  const body = h(
    "div",
    { class: "screen settings" },
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "switch-row" },
        h("label", { class: "text", for: "autosend" }, h("span", { class: "title" }, "Autosend Passcode"), h("span", { class: "small", id: "autosend-help" }, "When you sign in to an application that accepts Push OTP, approve it on this device and the passcode is sent for you.")),
        toggle,
      ),
      result,
    ),
    h(
      "section",
      { class: "card" },
      h("h3", {}, "About"),
      h(
        "dl",
        { class: "rows" },
        h("div", { class: "row" }, h("dt", {}, "App"), h("dd", {}, `Tessera ${APP_VERSION}`)),
        h("div", { class: "row" }, h("dt", {}, "Device"), h("dd", {}, [platform.os, platform.osVersion, `(${platform.deviceType})`].filter(Boolean).join(" "))),
        h("div", { class: "row" }, h("dt", {}, "Notifications"), h("dd", {}, notifications)),
        h("div", { class: "row" }, h("dt", {}, "Tokens"), h("dd", {}, String(state.tokens.length))),
      ),
    ),
  );
  return { title: "Settings", back: "#/", body };
}

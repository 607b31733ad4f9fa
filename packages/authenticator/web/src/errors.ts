import { AuthenticatorError } from "../../src/core/authenticator.ts";
import { h } from "./dom.ts";

export interface ReadableError {
  title: string;
  message: string;
  code: string | null;
}

// What a user can do about the server's refusals; the error code is shown beside it.
const HINTS: Record<string, string> = {
  ENROLLMENT_CODE_INVALID: "This enrollment link does not work any more: it was used already, replaced by a newer one, or it expired. Ask your administrator for a new one.",
  ENROLLMENT_IN_PROGRESS: "Another device is enrolling with this link right now. Wait ten minutes and try again, or ask your administrator for a new link.",
  LINK_INVALID: "This link holds no enrollment code. Open the link from your enrollment email again.",
  RATE_LIMITED: "Too many attempts. Wait a moment and try again.",
};

/** An error from the core, the network or the browser, in words for the user. */
export function readableError(error: unknown): ReadableError {
  if (error instanceof AuthenticatorError) {
    return { title: "Not accepted by the server", message: HINTS[error.code] ?? error.message, code: error.code };
  }
  if (error instanceof TypeError) {
    return { title: "No connection", message: "Tessera could not reach the server. Check your connection and try again.", code: null };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { title: "Something went wrong", message, code: null };
}

export function errorNotice(error: unknown): HTMLElement {
  const readable = readableError(error);
  return h(
    "div",
    { class: "notice error", role: "alert" },
    h("strong", {}, readable.title),
    h("div", {}, readable.message),
    readable.code ? h("div", { class: "code" }, `Error code: ${readable.code}`) : null,
  );
}

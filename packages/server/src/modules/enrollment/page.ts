import { escapeHtml } from "../mail/templates.js";
import type { Platform } from "./platform.js";

/**
 * The self-enrollment pages: server-rendered, mobile-first, one inline stylesheet and
 * inline SVG QR codes, no script and nothing fetched from elsewhere (the page carries an
 * enrollment code; see the headers in routes.ts).
 */
const style = `
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f6f8;color:#1b2430}
main{max-width:34rem;margin:0 auto;padding:1.25rem}
.card{background:#fff;border-radius:14px;padding:1.25rem 1.25rem 1.5rem;margin:0 0 1rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:.25rem 0 1rem}h2{font-size:1.05rem;margin:0 0 .5rem}
.brand{font-weight:700;letter-spacing:.04em;color:#2a5bd7;font-size:.9rem;text-transform:uppercase}
.muted{color:#5b6675;font-size:.92rem}.serial{font-family:ui-monospace,monospace;background:#eef2f7;padding:.1rem .4rem;border-radius:6px}
.button{display:block;width:100%;text-align:center;padding:.85rem 1rem;border-radius:10px;border:0;background:#2a5bd7;color:#fff;font-size:1rem;font-weight:600;text-decoration:none;margin:.5rem 0;cursor:pointer}
.button.secondary{background:#e7ecf5;color:#1b2430}
.qr{display:flex;justify-content:center;margin:.75rem 0}.qr svg{width:220px;height:220px}
ol{padding-left:1.25rem}li{margin:.25rem 0}
input[type=text]{width:100%;font-size:1.5rem;letter-spacing:.3em;text-align:center;padding:.6rem;border:1px solid #c5cdd8;border-radius:10px;font-family:ui-monospace,monospace}
.secret{font-family:ui-monospace,monospace;word-break:break-all;background:#eef2f7;padding:.5rem;border-radius:8px}
.error{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:700;font-size:1.1rem}
`;

/**
 * The form that takes a first passcode: digits, and the spaces an app shows them with
 * (the server takes whitespace out, see typedPasscode), posted to `action`.
 */
export function passcodeForm(action: string): string {
  return `<form method="post" action="${escapeHtml(action)}"><input type="text" name="otp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="16" required autofocus>
<button class="button" type="submit">Confirm</button></form>`;
}

export function layout(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)}</title><style>${style}</style></head>
<body><main><div class="brand">Tessera</div>${body}</main></body></html>`;
}

export function invalidCodePage(): string {
  // The same page for unknown, used, expired and cancelled codes: it tells nothing
  // to someone guessing codes.
  return layout(
    "Enrollment link not valid",
    `<div class="card"><h1>This enrollment link cannot be used</h1>
<p>It may have been used already, replaced by a newer email, or it has expired.</p>
<p class="muted">Ask your administrator to send you a new enrollment email.</p></div>`,
  );
}

function installSteps(platform: Platform, appUrl: string): string {
  const app = `<a href="${escapeHtml(appUrl)}">${escapeHtml(appUrl)}</a>`;
  switch (platform.os) {
    case "iOS":
      return `<ol><li>Open ${app} in Safari.</li><li>Tap <b>Share</b>, then <b>Add to Home Screen</b>.</li><li>Come back here and tap <b>Enroll in the Tessera app</b>.</li></ol>`;
    case "Android":
      return `<ol><li>Open ${app} in Chrome.</li><li>Tap the menu, then <b>Install app</b>.</li><li>Come back here and tap <b>Enroll in the Tessera app</b>.</li></ol>`;
    default:
      return `<ol><li>On this computer, open ${app} and choose <b>Install</b> in the address bar, or</li><li>on your phone, scan the QR code below: it opens the Tessera app and enrolls it.</li></ol>`;
  }
}

export interface EnrollPageModel {
  userName: string;
  virtualServerName: string;
  serial: string;
  expiresAt: string;
  platform: Platform;
  tesseraAllowed: boolean;
  otpAppAllowed: boolean;
  appUrl: string;
  autoEnrollUrl: string;
  nativeEnrollUrl: string;
  qrSvg: string;
  otpAppActionPath: string;
}

export function enrollPage(model: EnrollPageModel): string {
  const tessera = model.tesseraAllowed
    ? `<div class="card"><h2>Tessera app (recommended)</h2>
<p class="muted">Approve sign-ins with one tap (Push OTP), or read a passcode.</p>
${installSteps(model.platform, model.appUrl)}
<a class="button" href="${escapeHtml(model.autoEnrollUrl)}">Enroll in the Tessera app</a>
<a class="button secondary" href="${escapeHtml(model.nativeEnrollUrl)}">Open the installed app</a>
<p class="muted">Enrolling another device? Scan this code with it:</p>
<div class="qr">${model.qrSvg}</div></div>`
    : "";
  const otpApp = model.otpAppAllowed
    ? `<div class="card"><h2>Another authenticator app</h2>
<p class="muted">Any app that reads an otpauth QR code (time-based passcodes only, no Push OTP). The code is shown once.</p>
<form method="post" action="${escapeHtml(model.otpAppActionPath)}"><button class="button secondary" type="submit">Show the QR code for my authenticator app</button></form></div>`
    : "";
  return layout(
    "Set up your token",
    `<div class="card"><h1>Hello ${escapeHtml(model.userName)}, set up your sign-in token</h1>
<p>${escapeHtml(model.virtualServerName)} gave you token <span class="serial">${escapeHtml(model.serial)}</span>.
Enroll it before ${escapeHtml(model.expiresAt)}.</p></div>${tessera}${otpApp}`,
  );
}

/** Hardware and email tokens: the user proves holding the token with a first code. */
export function possessionPage(model: {
  userName: string;
  virtualServerName: string;
  serial: string;
  tokenType: "hardware" | "email";
  code: string;
  sentTo?: string;
  error?: string;
}): string {
  const intro =
    model.tokenType === "hardware"
      ? `<p>Press the button on token <span class="serial">${escapeHtml(model.serial)}</span> (or read its display) and enter the code it shows.</p>`
      : model.sentTo
        ? `<p>We sent a code to ${escapeHtml(model.sentTo)}. Enter it here to confirm your email token <span class="serial">${escapeHtml(model.serial)}</span>.</p>`
        : `<p>Your sign-in codes will come by email. Confirm your address: we send you a first code.</p>
<form method="post" action="/enroll/${escapeHtml(model.code)}/email"><button class="button" type="submit">Email me a code</button></form>`;
  const form =
    model.tokenType === "hardware" || model.sentTo
      ? `${model.error ? `<p class="error">${escapeHtml(model.error)}</p>` : ""}
${passcodeForm(`/enroll/${model.code}/confirm`)}`
      : "";
  return layout(
    "Set up your token",
    `<div class="card"><h1>Hello ${escapeHtml(model.userName)}, set up your sign-in token</h1>
<p class="muted">${escapeHtml(model.virtualServerName)}</p>${intro}${form}</div>`,
  );
}

export function otpAppPage(model: { serial: string; qrSvg: string; secretBase32: string; confirmPath: string; error?: string }): string {
  return layout(
    "Add to your authenticator app",
    `<div class="card"><h1>Scan with your authenticator app</h1>
<div class="qr">${model.qrSvg}</div>
<p class="muted">Cannot scan? Enter this key by hand (time-based):</p><p class="secret">${escapeHtml(model.secretBase32)}</p>
<p class="muted">This code is shown only now. Reloading the page makes a new one.</p></div>
<div class="card"><h2>Confirm with your first passcode</h2>
${model.error ? `<p class="error">${escapeHtml(model.error)}</p>` : ""}
${passcodeForm(model.confirmPath)}</div>`,
  );
}

export function enrolledPage(model: { serial: string; app: string; pushApplications: string[] }): string {
  const apps =
    model.pushApplications.length > 0
      ? `<p>These applications accept Push OTP: leave the passcode empty and approve on your phone:</p><ul>${model.pushApplications.map((name) => `<li>${escapeHtml(name)}</li>`).join("")}</ul>`
      : `<p class="muted">No application of your organisation accepts Push OTP yet; type the passcode from your app when you sign in.</p>`;
  return layout(
    "Token enrolled",
    `<div class="card"><p class="ok">Your token <span class="serial">${escapeHtml(model.serial)}</span> is ready.</p>
<p>It is enrolled in ${escapeHtml(model.app)}.</p>${apps}</div>`,
  );
}

import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database } from "../../storage/schema.js";
import type { Principal } from "../operators/access.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";

/**
 * The enrollment email: a built-in default, overridable per virtual server and inherited
 * down the tree. Templates hold `{{placeholder}}`s from a fixed list; values are
 * HTML-escaped in the HTML body and left as they are in the subject and text body.
 * Substitution is one pass over a fixed list, so it is written here rather than pulling
 * in a template language whose loops and helpers an operator-edited template must not have.
 */

export const enrollmentPlaceholders = ["firstName", "lastName", "userId", "virtualServerName", "enrollUrl", "expiresAt", "serial"] as const;
export type EnrollmentPlaceholder = (typeof enrollmentPlaceholders)[number];

export interface MailTemplate {
  subject: string;
  text: string;
  html: string;
}

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

export interface EnrollmentMailValues {
  firstName: string;
  lastName: string;
  userId: string;
  virtualServerName: string;
  enrollUrl: string;
  /**
   * When the link dies, in milliseconds since the epoch like the `*_at` columns (or a
   * Date); shown as a readable UTC date, "Friday 8 January 2026, 14:05 UTC".
   */
  expiresAt: number | Date;
  serial: string;
}

export const ENROLLMENT_KIND = "enrollment";

/** Limits of an operator's template, also in the API schema. */
export const templateLimits = { subjectChars: 200, textChars: 20_000, htmlChars: 100_000 } as const;

export const defaultEnrollmentTemplate: MailTemplate = {
  subject: "Set up your {{virtualServerName}} login token",
  text: `Hello {{firstName}} {{lastName}},

A login token has been prepared for you ({{userId}}) at {{virtualServerName}}: token {{serial}}.

To set it up, open this link on your phone or computer and follow the steps:

{{enrollUrl}}

The link works once and expires on {{expiresAt}}.

Do not forward this email: whoever opens the link receives your token. If you did not expect it, ignore it; nothing happens until the link is used.

-- 
{{virtualServerName}}
`,
  // Tables and inline styles only: what every mail client renders, phones included.
  // No images and nothing loaded from the web, so nothing is blocked or tracks the reader.
  html: `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Set up your {{virtualServerName}} login token</title>
</head>
<body style="margin:0;padding:0;background:#f3f4f6;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f3f4f6;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:560px;background:#ffffff;border-radius:8px;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#111827;">
<tr><td style="padding:28px 28px 8px;font-size:20px;font-weight:600;line-height:1.3;">Set up your login token</td></tr>
<tr><td style="padding:8px 28px;font-size:16px;line-height:1.5;">
<p style="margin:0 0 12px;">Hello {{firstName}} {{lastName}},</p>
<p style="margin:0 0 12px;">A login token has been prepared for you (<strong>{{userId}}</strong>) at {{virtualServerName}}: token <strong>{{serial}}</strong>.</p>
<p style="margin:0 0 20px;">Open this link on your phone or computer and follow the steps.</p>
</td></tr>
<tr><td align="center" style="padding:0 28px 20px;">
<a href="{{enrollUrl}}" style="display:inline-block;padding:14px 28px;background:#1d4ed8;color:#ffffff;text-decoration:none;border-radius:6px;font-size:16px;font-weight:600;">Set up my token</a>
</td></tr>
<tr><td style="padding:0 28px 8px;font-size:14px;line-height:1.5;color:#374151;">
<p style="margin:0 0 8px;">Or copy this link into your browser:</p>
<p style="margin:0 0 16px;word-break:break-all;"><a href="{{enrollUrl}}" style="color:#1d4ed8;">{{enrollUrl}}</a></p>
<p style="margin:0 0 16px;">The link works once and expires on <strong>{{expiresAt}}</strong>.</p>
</td></tr>
<tr><td style="padding:16px 28px 28px;font-size:13px;line-height:1.5;color:#6b7280;border-top:1px solid #e5e7eb;">
Do not forward this email: whoever opens the link receives your token. If you did not expect it, ignore it; nothing happens until the link is used.
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
`,
};

const HTML_ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]!);
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/** "Friday 8 January 2026, 14:05 UTC": the same for every reader, whatever their locale. */
export function formatUtcDate(ms: number): string {
  const date = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${DAYS[date.getUTCDay()]} ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()}, ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())} UTC`;
}

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

type Part = string | { name: EnrollmentPlaceholder };

function isPlaceholder(name: string): name is EnrollmentPlaceholder {
  return (enrollmentPlaceholders as readonly string[]).includes(name);
}

/** Every problem with one field of a template: unknown placeholders, an unclosed `{{`. */
function placeholderProblems(field: string, source: string): { names: string[]; problems: string[] } {
  const names: string[] = [];
  const problems: string[] = [];
  for (const match of source.matchAll(PLACEHOLDER)) {
    const name = match[1] ?? "";
    names.push(name);
    if (!isPlaceholder(name)) problems.push(`${field}: unknown placeholder {{${name}}}; known: ${enrollmentPlaceholders.join(", ")}`);
  }
  if (source.replace(PLACEHOLDER, "").includes("{{")) problems.push(`${field}: a {{ is not closed with }}`);
  return { names, problems };
}

/** Every reason an operator's template cannot be saved; empty when it can. */
export function validateEnrollmentTemplate(template: MailTemplate): string[] {
  const subject = placeholderProblems("subject", template.subject);
  const text = placeholderProblems("text", template.text);
  const html = placeholderProblems("html", template.html);
  const problems = [...subject.problems, ...text.problems, ...html.problems];
  if (template.subject.trim() === "") problems.push("subject: must not be empty");
  if (/[\r\n]/.test(template.subject)) problems.push("subject: must be one line");
  // Subjects show on lock screens and in mail server logs; the link is a credential.
  if (subject.names.includes("enrollUrl")) problems.push("subject: must not contain {{enrollUrl}}");
  if (!text.names.includes("enrollUrl")) problems.push("text: must contain {{enrollUrl}}, or users cannot enroll");
  if (!html.names.includes("enrollUrl")) problems.push("html: must contain {{enrollUrl}}, or users cannot enroll");
  if (template.subject.length > templateLimits.subjectChars) problems.push(`subject: at most ${templateLimits.subjectChars} characters`);
  if (template.text.length > templateLimits.textChars) problems.push(`text: at most ${templateLimits.textChars} characters`);
  if (template.html.length > templateLimits.htmlChars) problems.push(`html: at most ${templateLimits.htmlChars} characters`);
  return problems;
}

function split(source: string): Part[] {
  const parts: Part[] = [];
  let last = 0;
  for (const match of source.matchAll(PLACEHOLDER)) {
    const name = match[1] ?? "";
    // Saved templates were checked; the default is ours. An unknown name stays as written.
    if (!isPlaceholder(name)) continue;
    parts.push(source.slice(last, match.index), { name });
    last = match.index + match[0].length;
  }
  parts.push(source.slice(last));
  return parts;
}

function join(parts: Part[], values: Record<EnrollmentPlaceholder, string>, escape: (value: string) => string): string {
  let out = "";
  for (const part of parts) out += typeof part === "string" ? part : escape(values[part.name]);
  return out;
}

/**
 * Prepares a template once for many mails (a provisioning task renders one per user).
 * The subject is one line whatever the values hold.
 */
export function compileEnrollmentTemplate(template: MailTemplate): (values: EnrollmentMailValues) => RenderedMail {
  const subject = split(template.subject);
  const text = split(template.text);
  const html = split(template.html);
  const asIs = (value: string) => value;
  return (values) => {
    const strings: Record<EnrollmentPlaceholder, string> = {
      firstName: values.firstName,
      lastName: values.lastName,
      userId: values.userId,
      virtualServerName: values.virtualServerName,
      enrollUrl: values.enrollUrl,
      expiresAt: formatUtcDate(Number(values.expiresAt)),
      serial: values.serial,
    };
    return {
      subject: join(subject, strings, asIs).replace(/[\r\n]+/g, " ").trim(),
      text: join(text, strings, asIs),
      html: join(html, strings, escapeHtml),
    };
  };
}

const compiled = new WeakMap<MailTemplate, (values: EnrollmentMailValues) => RenderedMail>();

/** Renders one mail; the template is prepared once per template object, so a loop over many users stays cheap. */
export function renderEnrollmentMail(template: MailTemplate, values: EnrollmentMailValues): RenderedMail {
  let render = compiled.get(template);
  if (!render) {
    render = compileEnrollmentTemplate(template);
    compiled.set(template, render);
  }
  return render(values);
}

export interface LoadedTemplate extends MailTemplate {
  /** The virtual server whose template this is (itself or an ancestor); null for the built-in default. */
  sourceVirtualServerId: string | null;
  updatedAt: number | null;
}

/** The template of a virtual server: its own, else its nearest ancestor's, else the default. */
export async function loadTemplate(db: Kysely<Database>, virtualServerId: string): Promise<LoadedTemplate> {
  const vs = await db.selectFrom("virtual_servers").select("path").where("id", "=", virtualServerId).executeTakeFirstOrThrow();
  const ancestry = vs.path.split("/").filter(Boolean);
  const rows = await db
    .selectFrom("mail_templates")
    .selectAll()
    .where("kind", "=", ENROLLMENT_KIND)
    .where("virtual_server_id", "in", ancestry)
    .execute();
  for (const id of ancestry.reverse()) {
    const row = rows.find((candidate) => candidate.virtual_server_id === id);
    if (row) return { subject: row.subject, text: row.text, html: row.html, sourceVirtualServerId: id, updatedAt: row.updated_at };
  }
  return { ...defaultEnrollmentTemplate, sourceVirtualServerId: null, updatedAt: null };
}

export interface MailTemplateView extends MailTemplate {
  virtualServerId: string;
  kind: typeof ENROLLMENT_KIND;
  /** `own`: this virtual server's; `inherited`: an ancestor's (inheritedFrom); `default`: built in. */
  source: "own" | "inherited" | "default";
  inheritedFrom: string | null;
  placeholders: EnrollmentPlaceholder[];
  updatedAt: string | null;
}

function toView(virtualServerId: string, loaded: LoadedTemplate): MailTemplateView {
  const source = loaded.sourceVirtualServerId === null ? "default" : loaded.sourceVirtualServerId === virtualServerId ? "own" : "inherited";
  return {
    virtualServerId,
    kind: ENROLLMENT_KIND,
    subject: loaded.subject,
    text: loaded.text,
    html: loaded.html,
    source,
    inheritedFrom: source === "inherited" ? loaded.sourceVirtualServerId : null,
    placeholders: [...enrollmentPlaceholders],
    updatedAt: loaded.updatedAt === null ? null : new Date(loaded.updatedAt).toISOString(),
  };
}

const digest = (value: string) => createHash("sha256").update(value).digest("hex").slice(0, 16);

/** What the audit trail keeps of a template: the subject, and fingerprints of the bodies. */
function auditSummary(template: MailTemplate | null) {
  return template && { subject: template.subject, textSha256: digest(template.text), htmlSha256: digest(template.html) };
}

export function createMailTemplateService(deps: Pick<CoreDeps, "db" | "clock" | "audit">) {
  const { db, clock, audit } = deps;
  return {
    async getMailTemplate(principal: Principal, virtualServerId: string): Promise<MailTemplateView> {
      await findVisibleVirtualServer(db, principal, virtualServerId, "policy.read");
      return toView(virtualServerId, await loadTemplate(db, virtualServerId));
    },

    /** Saves this virtual server's own template, or with null returns it to inheritance. */
    async updateMailTemplate(principal: Principal, virtualServerId: string, template: MailTemplate | null): Promise<MailTemplateView> {
      return db.transaction().execute(async (trx) => {
        await findVisibleVirtualServer(trx, principal, virtualServerId, "policy.manage");
        if (template) {
          const problems = validateEnrollmentTemplate(template);
          if (problems.length > 0) throw fail("TEMPLATE_INVALID", { problem: problems.join("; ") }, { problems });
        }
        const before = await trx
          .selectFrom("mail_templates")
          .selectAll()
          .where("virtual_server_id", "=", virtualServerId)
          .where("kind", "=", ENROLLMENT_KIND)
          .executeTakeFirst();
        const now = clock.nowMs();
        if (template) {
          const values = { subject: template.subject, text: template.text, html: template.html, updated_at: now };
          await trx
            .insertInto("mail_templates")
            .values({ virtual_server_id: virtualServerId, kind: ENROLLMENT_KIND, ...values })
            .onConflict((conflict) => conflict.columns(["virtual_server_id", "kind"]).doUpdateSet(values))
            .execute();
        } else {
          await trx.deleteFrom("mail_templates").where("virtual_server_id", "=", virtualServerId).where("kind", "=", ENROLLMENT_KIND).execute();
        }
        await audit.append(trx, principal, [
          {
            action: template ? "mail_template.update" : "mail_template.reset",
            virtualServerId,
            targetType: "virtual_server",
            targetId: virtualServerId,
            details: { kind: ENROLLMENT_KIND, before: auditSummary(before ?? null), after: auditSummary(template) },
          },
        ]);
        return toView(virtualServerId, await loadTemplate(trx, virtualServerId));
      });
    },
  };
}

export type MailTemplateService = ReturnType<typeof createMailTemplateService>;

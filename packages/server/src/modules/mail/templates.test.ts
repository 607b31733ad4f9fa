import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TesseraError } from "../../errors.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { createTenant, type TestTenant } from "../../testing/fixtures.js";
import { installerPrincipal } from "../operators/access.js";
import {
  createMailTemplateService,
  defaultEnrollmentTemplate,
  formatUtcDate,
  loadTemplate,
  renderEnrollmentMail,
  validateEnrollmentTemplate,
  type EnrollmentMailValues,
  type MailTemplate,
} from "./templates.js";

const values: EnrollmentMailValues = {
  firstName: "Anna",
  lastName: "O'Brien <script>alert(1)</script>",
  userId: "anna&co",
  virtualServerName: "Acme \"Paris\"",
  enrollUrl: "https://mfa.example.com/enroll/ABCDEFGHIJKLMNOPQRSTUVWXYZ?x=1&y=2",
  expiresAt: Date.parse("2026-01-08T14:05:00Z"),
  serial: "MP0000012345",
};

const custom: MailTemplate = {
  subject: "{{virtualServerName}}: your token {{serial}}",
  text: "Hi {{ firstName }}, enroll at {{enrollUrl}} before {{expiresAt}}.",
  html: '<p>Hi {{firstName}} {{lastName}}, <a href="{{enrollUrl}}">enroll</a></p>',
};

describe("enrollment mail rendering", () => {
  it("fills every placeholder of the default template", () => {
    const mail = renderEnrollmentMail(defaultEnrollmentTemplate, values);
    expect(mail.subject).toBe('Set up your Acme "Paris" login token');
    expect(mail.text).toContain("Hello Anna O'Brien <script>alert(1)</script>,");
    expect(mail.text).toContain("(anna&co)");
    expect(mail.text).toContain(values.enrollUrl);
    expect(mail.text).toContain("token MP0000012345");
    expect(mail.text).toContain("expires on Thursday 8 January 2026, 14:05 UTC.");
    for (const body of [mail.subject, mail.text, mail.html]) expect(body).not.toMatch(/\{\{|\}\}/);
  });

  it("escapes values in the HTML body and nowhere else", () => {
    const mail = renderEnrollmentMail(defaultEnrollmentTemplate, values);
    expect(mail.html).not.toContain("<script>");
    expect(mail.html).toContain("O&#39;Brien &lt;script&gt;alert(1)&lt;/script&gt;");
    expect(mail.html).toContain("anna&amp;co");
    expect(mail.html).toContain('href="https://mfa.example.com/enroll/ABCDEFGHIJKLMNOPQRSTUVWXYZ?x=1&amp;y=2"');
    expect(mail.html).toContain("Acme &quot;Paris&quot;");
    expect(mail.text).not.toContain("&amp;");
    expect(mail.subject).not.toContain("&quot;");
  });

  it("keeps the subject on one line whatever a value holds", () => {
    const mail = renderEnrollmentMail(defaultEnrollmentTemplate, { ...values, virtualServerName: "Acme\r\nBcc: evil@example.com" });
    expect(mail.subject).toBe("Set up your Acme Bcc: evil@example.com login token");
  });

  it("accepts spaces inside the braces", () => {
    expect(renderEnrollmentMail(custom, values).text).toBe(
      `Hi Anna, enroll at ${values.enrollUrl} before Thursday 8 January 2026, 14:05 UTC.`,
    );
  });

  it("writes dates in UTC, the same in every locale", () => {
    expect(formatUtcDate(Date.parse("2026-03-01T00:07:00Z"))).toBe("Sunday 1 March 2026, 00:07 UTC");
  });

  it("has a self-contained default: inline styles, no images, nothing loaded from the web", () => {
    const { html } = defaultEnrollmentTemplate;
    expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(html).not.toMatch(/<img|<script|<link|<style|<iframe|@import|url\(|src=/i);
    // The only address in the template is the enrollment link.
    expect(html.match(/https?:\/\//g)).toBeNull();
    expect(validateEnrollmentTemplate(defaultEnrollmentTemplate)).toEqual([]);
  });
});

describe("enrollment template validation", () => {
  it("refuses unknown placeholders, naming each", () => {
    const problems = validateEnrollmentTemplate({ ...custom, text: "Hi {{firstname}} {{enrollUrl}} {{ token }}" });
    expect(problems).toEqual([expect.stringContaining("unknown placeholder {{firstname}}"), expect.stringContaining("unknown placeholder {{token}}")]);
  });

  it("refuses an unclosed placeholder, a body without the link and the link in the subject", () => {
    expect(validateEnrollmentTemplate({ ...custom, html: "<p>{{enrollUrl}} {{firstName</p>" })).toEqual(["html: a {{ is not closed with }}"]);
    expect(validateEnrollmentTemplate({ ...custom, text: "Hi {{firstName}}" })).toEqual(["text: must contain {{enrollUrl}}, or users cannot enroll"]);
    expect(validateEnrollmentTemplate({ ...custom, subject: "Go to {{enrollUrl}}" })).toEqual(["subject: must not contain {{enrollUrl}}"]);
    expect(validateEnrollmentTemplate({ ...custom, subject: "two\nlines" })).toEqual(["subject: must be one line"]);
  });
});

describeEachDatabase("mail templates per virtual server", (kind) => {
  let core: TestCore;
  let parent: TestTenant;
  let child: TestTenant;
  let stranger: TestTenant;
  let templates: ReturnType<typeof createMailTemplateService>;

  beforeAll(async () => {
    core = await createTestCore(kind);
    templates = createMailTemplateService({ db: core.storage.db, clock: core.clock, audit: core.services.audit });
    parent = await createTenant(core.services, "Provider");
    child = await createTenant(core.services, "Customer", { parentId: parent.virtualServerId });
    stranger = await createTenant(core.services, "Stranger");
  });
  afterAll(async () => core.close());

  it("gives the built-in default until someone sets a template", async () => {
    const view = await templates.getMailTemplate(child.principals.helpdesk, child.virtualServerId);
    expect(view).toMatchObject({ virtualServerId: child.virtualServerId, kind: "enrollment", source: "default", inheritedFrom: null, updatedAt: null });
    expect(view.subject).toBe(defaultEnrollmentTemplate.subject);
    expect(view.placeholders).toContain("enrollUrl");
  });

  it("inherits the nearest ancestor's template, prefers its own, and returns to inheritance on reset", async () => {
    const saved = await templates.updateMailTemplate(parent.principals.admin, parent.virtualServerId, custom);
    expect(saved).toMatchObject({ source: "own", subject: custom.subject, updatedAt: new Date(core.clock.nowMs()).toISOString() });
    expect(await templates.getMailTemplate(child.principals.operator, child.virtualServerId)).toMatchObject({
      source: "inherited",
      inheritedFrom: parent.virtualServerId,
      subject: custom.subject,
    });

    const own = { ...custom, subject: "Customer token {{serial}}" };
    await templates.updateMailTemplate(child.principals.admin, child.virtualServerId, own);
    expect((await loadTemplate(core.storage.db, child.virtualServerId)).subject).toBe("Customer token {{serial}}");
    expect((await loadTemplate(core.storage.db, parent.virtualServerId)).subject).toBe(custom.subject);

    const reset = await templates.updateMailTemplate(child.principals.admin, child.virtualServerId, null);
    expect(reset).toMatchObject({ source: "inherited", subject: custom.subject });
    await templates.updateMailTemplate(parent.principals.admin, parent.virtualServerId, null);
    expect((await loadTemplate(core.storage.db, child.virtualServerId)).sourceVirtualServerId).toBeNull();
  });

  it("audits each change with the subject and fingerprints of the bodies", async () => {
    await templates.updateMailTemplate(child.principals.admin, child.virtualServerId, custom);
    await core.services.audit.settle();
    const record = await core.storage.db
      .selectFrom("audit_log")
      .selectAll()
      .where("action", "=", "mail_template.update")
      .where("virtual_server_id", "=", child.virtualServerId)
      .orderBy("seq", "desc")
      .executeTakeFirstOrThrow();
    expect(record.actor).toBe(child.principals.admin.actor);
    const details = JSON.parse(record.details!) as { after: { subject: string; htmlSha256: string } };
    expect(details.after.subject).toBe(custom.subject);
    expect(details.after.htmlSha256).toMatch(/^[0-9a-f]{16}$/);
  });

  it("refuses a template with an unknown placeholder and keeps the one in place", async () => {
    const before = await templates.getMailTemplate(child.principals.admin, child.virtualServerId);
    const error = await templates
      .updateMailTemplate(child.principals.admin, child.virtualServerId, { ...custom, text: "{{enrollUrl}} {{password}}" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TesseraError);
    expect(error).toMatchObject({ code: "TEMPLATE_INVALID", status: 400, details: { problems: [expect.stringContaining("{{password}}")] } });
    expect(await templates.getMailTemplate(child.principals.admin, child.virtualServerId)).toEqual(before);
  });

  it("lets every role read but only admins change, and hides other tenants' templates", async () => {
    await expect(templates.updateMailTemplate(child.principals.operator, child.virtualServerId, custom)).rejects.toMatchObject({ code: "FORBIDDEN" });
    await expect(templates.getMailTemplate(child.principals.auditor, child.virtualServerId)).resolves.toBeDefined();
    await expect(templates.getMailTemplate(stranger.principals.admin, child.virtualServerId)).rejects.toMatchObject({ code: "VIRTUAL_SERVER_NOT_FOUND" });
    await expect(templates.updateMailTemplate(stranger.principals.admin, child.virtualServerId, custom)).rejects.toMatchObject({ code: "VIRTUAL_SERVER_NOT_FOUND" });
    // The child's admin cannot reach the parent's template either.
    await expect(templates.updateMailTemplate(child.principals.admin, parent.virtualServerId, custom)).rejects.toMatchObject({ code: "VIRTUAL_SERVER_NOT_FOUND" });
    await expect(templates.getMailTemplate(installerPrincipal, child.virtualServerId)).resolves.toMatchObject({ source: "own" });
  });
});

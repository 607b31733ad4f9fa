import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { principalOf } from "../../http/app.js";
import { commonErrors, pageLimit, virtualServerIdParam } from "../../http/schemas.js";
import { outboxStatuses } from "./outbox.js";
import type { MailService } from "./service.js";
import { enrollmentPlaceholders, templateLimits } from "./templates.js";

const outboxItemSchema = z
  .object({
    id: z.string(),
    virtualServerId: z.string().nullable(),
    kind: z.string(),
    to: z.string(),
    subject: z.string(),
    status: z.enum(outboxStatuses),
    attempts: z.number().int(),
    nextAttemptAt: z.string().nullable(),
    lastError: z.string().nullable(),
    createdAt: z.string(),
    sentAt: z.string().nullable(),
    text: z.string().optional().describe("The text body, only while the mail is not sent"),
    enrollUrl: z.string().nullable().optional().describe("The enrollment link in the text body, only while the mail is not sent"),
  })
  .meta({ id: "OutboxMail" });

const mailTemplateSchema = z
  .object({
    virtualServerId: z.string(),
    kind: z.literal("enrollment"),
    subject: z.string(),
    text: z.string(),
    html: z.string(),
    source: z.enum(["own", "inherited", "default"]),
    inheritedFrom: z.string().nullable(),
    placeholders: z.array(z.enum(enrollmentPlaceholders)),
    updatedAt: z.string().nullable(),
  })
  .meta({ id: "MailTemplate" });

const mailTemplateInput = z.strictObject({
  subject: z.string().min(1).max(templateLimits.subjectChars),
  text: z.string().min(1).max(templateLimits.textChars),
  html: z.string().min(1).max(templateLimits.htmlChars),
});

/**
 * Registered with the services that hold `mail` (createMailService); typed by that part
 * only, so this module builds before and after core.ts wires it in.
 */
export interface MailRouteOptions {
  services: { mail: MailService };
}

export const mailRoutes: FastifyPluginAsyncZod<MailRouteOptions> = async (app, { services }) => {
  app.get(
    "/outbox",
    {
      schema: {
        operationId: "listOutbox",
        summary:
          "Outgoing mail, newest first. Unsent mail includes its text and enrollment link, for handing over when no SMTP server is configured; admins and operators only",
        querystring: z.strictObject({
          virtualServerId: z.string().min(1).max(64).optional(),
          status: z.enum(outboxStatuses).optional(),
          cursor: z.string().max(512).optional(),
          limit: pageLimit,
        }),
        response: { 200: z.object({ items: z.array(outboxItemSchema), nextCursor: z.string().nullable() }), ...commonErrors },
      },
    },
    async (request) => services.mail.listOutbox(principalOf(request), request.query),
  );

  app.get(
    "/virtual-servers/:virtualServerId/mail-templates/enrollment",
    {
      schema: {
        operationId: "getMailTemplate",
        summary: "The enrollment email template in effect: this virtual server's own, an ancestor's, or the built-in default",
        params: virtualServerIdParam,
        response: { 200: mailTemplateSchema, ...commonErrors },
      },
    },
    async (request) => services.mail.getMailTemplate(principalOf(request), request.params.virtualServerId),
  );

  app.put(
    "/virtual-servers/:virtualServerId/mail-templates/enrollment",
    {
      schema: {
        operationId: "updateMailTemplate",
        summary: `Set this virtual server's enrollment email template, or send null to inherit again. Placeholders: ${enrollmentPlaceholders.map((name) => `{{${name}}}`).join(", ")}`,
        params: virtualServerIdParam,
        body: mailTemplateInput.nullable(),
        response: { 200: mailTemplateSchema, ...commonErrors },
      },
    },
    async (request) => services.mail.updateMailTemplate(principalOf(request), request.params.virtualServerId, request.body),
  );
};

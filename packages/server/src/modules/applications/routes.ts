import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors } from "../../http/schemas.js";
import { addressProblem } from "./addresses.js";
import { PUSH_TIMEOUT_SECONDS } from "./service.js";

const address = z.string().min(2).max(64).refine((entry) => addressProblem(entry) === null, { message: "an IPv4 or IPv6 address or CIDR range" });
const radiusSecret = z.string().min(16, "at least 16 characters (RFC 2865 section 3 advises long, random secrets)").max(128);

const applicationSchema = z
  .object({
    id: z.string(),
    virtualServerId: z.string(),
    name: z.string(),
    kind: z.enum(["radius", "rest"]),
    resourceName: z.string(),
    pushOtp: z.boolean(),
    pushMode: z.enum(["hold", "challenge"]),
    pushTimeoutSeconds: z.number().int(),
    radiusAddresses: z.array(z.string()).nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    radiusSecret: z.string().optional(),
    apiKey: z.string().optional(),
  })
  .meta({ id: "Application" });

/** How long a push login waits for the user (the challenge's lifetime; a RADIUS request in hold mode is held as long). */
const pushTimeoutSeconds = z
  .number()
  .int()
  .min(PUSH_TIMEOUT_SECONDS.min)
  .max(PUSH_TIMEOUT_SECONDS.max)
  .describe(`Seconds a push login waits for the user's answer (default ${PUSH_TIMEOUT_SECONDS.default}); keep it below the NAS's own timeout`);

const idParam = z.strictObject({ applicationId: z.string().min(1).max(64) });

export const applicationRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.post(
    "/applications",
    {
      schema: {
        operationId: "createApplication",
        summary: "A RADIUS client (addresses and shared secret) or a REST client (API key, shown once) that authenticates users",
        body: z.discriminatedUnion("kind", [
          z.strictObject({
            kind: z.literal("radius"),
            virtualServerId: z.string().min(1).max(64),
            name: z.string().trim().min(1).max(128),
            resourceName: z.string().trim().min(1).max(128).optional(),
            pushOtp: z.boolean().optional(),
            pushMode: z.enum(["hold", "challenge"]).optional(),
            pushTimeoutSeconds: pushTimeoutSeconds.optional(),
            radiusAddresses: z.array(address).min(1).max(256),
            radiusSecret: radiusSecret.optional(),
          }),
          z.strictObject({
            kind: z.literal("rest"),
            virtualServerId: z.string().min(1).max(64),
            name: z.string().trim().min(1).max(128),
            resourceName: z.string().trim().min(1).max(128).optional(),
            pushOtp: z.boolean().optional(),
            pushTimeoutSeconds: pushTimeoutSeconds.optional(),
          }),
        ]),
        response: { 201: applicationSchema, ...commonErrors },
      },
    },
    async (request, reply) => reply.status(201).send(await services.applications.create(principalOf(request), request.body)),
  );

  app.get(
    "/applications",
    {
      schema: {
        operationId: "listApplications",
        querystring: z.strictObject({ virtualServerId: z.string().min(1).max(64) }),
        response: { 200: z.object({ items: z.array(applicationSchema) }), ...commonErrors },
      },
    },
    async (request) => ({ items: await services.applications.list(principalOf(request), request.query.virtualServerId) }),
  );

  app.patch(
    "/applications/:applicationId",
    {
      schema: {
        operationId: "updateApplication",
        summary: "Rename, change the resource name, Push OTP, push mode and timeout, RADIUS addresses and secret, or rotate a REST API key",
        params: idParam,
        body: z.strictObject({
          name: z.string().trim().min(1).max(128).optional(),
          resourceName: z.string().trim().min(1).max(128).optional(),
          pushOtp: z.boolean().optional(),
          pushMode: z.enum(["hold", "challenge"]).optional(),
          pushTimeoutSeconds: pushTimeoutSeconds.optional(),
          radiusAddresses: z.array(address).min(1).max(256).optional(),
          radiusSecret: radiusSecret.optional(),
          rotateApiKey: z.boolean().optional(),
        }),
        response: { 200: applicationSchema, ...commonErrors },
      },
    },
    async (request) => services.applications.update(principalOf(request), request.params.applicationId, request.body),
  );

  app.delete(
    "/applications/:applicationId",
    { schema: { operationId: "deleteApplication", params: idParam, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await services.applications.delete(principalOf(request), request.params.applicationId);
      return reply.status(204).send(null);
    },
  );
};

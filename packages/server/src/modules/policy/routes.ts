import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, virtualServerIdParam } from "../../http/schemas.js";
import { policySettingsSchema, policyUpdateSchema } from "./policy.js";

const policyViewSchema = z
  .object({
    virtualServerId: z.string(),
    effective: policySettingsSchema,
    overrides: policySettingsSchema.partial(),
    source: z.record(z.string(), z.string()),
  })
  .meta({ id: "Policy" });

export const policyRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.get(
    "/virtual-servers/:virtualServerId/policy",
    {
      schema: {
        operationId: "getPolicy",
        summary: "The effective policy, what this virtual server overrides, and where each value comes from",
        params: virtualServerIdParam,
        response: { 200: policyViewSchema, ...commonErrors },
      },
    },
    async (request) => services.policy.get(principalOf(request), request.params.virtualServerId),
  );

  app.patch(
    "/virtual-servers/:virtualServerId/policy",
    {
      schema: {
        operationId: "updatePolicy",
        summary: "Override policy fields; null returns a field to inheritance",
        params: virtualServerIdParam,
        body: policyUpdateSchema,
        response: { 200: policyViewSchema, ...commonErrors },
      },
    },
    async (request) => services.policy.update(principalOf(request), request.params.virtualServerId, request.body),
  );
};

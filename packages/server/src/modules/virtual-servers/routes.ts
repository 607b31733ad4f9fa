import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, virtualServerIdParam } from "../../http/schemas.js";

const virtualServerSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    parentId: z.string().nullable(),
    capacity: z.number().int().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: "VirtualServer" });

const name = z.string().trim().min(1).max(128);
const capacity = z.number().int().min(0).max(100_000_000).nullable();

export const virtualServerRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.post(
    "/virtual-servers",
    {
      schema: {
        operationId: "createVirtualServer",
        summary: "Create a child virtual server under one in your scope",
        body: z.strictObject({ name, parentId: z.string().min(1).max(64), capacity: capacity.optional() }),
        response: { 201: virtualServerSchema, ...commonErrors },
      },
    },
    async (request, reply) => reply.status(201).send(await services.virtualServers.create(principalOf(request), request.body)),
  );

  app.get(
    "/virtual-servers",
    {
      schema: {
        operationId: "listVirtualServers",
        summary: "The virtual servers in your scope",
        response: { 200: z.object({ items: z.array(virtualServerSchema) }), ...commonErrors },
      },
    },
    async (request) => ({ items: await services.virtualServers.list(principalOf(request)) }),
  );

  app.get(
    "/virtual-servers/:virtualServerId",
    {
      schema: {
        operationId: "getVirtualServer",
        params: virtualServerIdParam,
        response: { 200: virtualServerSchema, ...commonErrors },
      },
    },
    async (request) => services.virtualServers.get(principalOf(request), request.params.virtualServerId),
  );

  app.patch(
    "/virtual-servers/:virtualServerId",
    {
      schema: {
        operationId: "updateVirtualServer",
        summary: "Rename, or (from above) change the capacity",
        params: virtualServerIdParam,
        body: z.strictObject({ name: name.optional(), capacity: capacity.optional() }),
        response: { 200: virtualServerSchema, ...commonErrors },
      },
    },
    async (request) => services.virtualServers.update(principalOf(request), request.params.virtualServerId, request.body),
  );
};

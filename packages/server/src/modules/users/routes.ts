import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, pageLimit, virtualServerIdParam } from "../../http/schemas.js";
import { groupNameSchema, userIdSchema, userInputSchema, userUpdateSchema } from "./user.js";

const userSchema = z
  .object({
    userId: z.string(),
    virtualServerId: z.string(),
    firstName: z.string(),
    lastName: z.string(),
    email: z.string(),
    groups: z.array(z.string()),
    tokens: z.array(z.object({ serial: z.string(), type: z.string(), state: z.string() })),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: "User" });

const userParams = z.strictObject({ virtualServerId: z.string().min(1).max(64), userId: userIdSchema });

export const userRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.post(
    "/virtual-servers/:virtualServerId/users",
    {
      schema: {
        operationId: "createUser",
        params: virtualServerIdParam,
        body: userInputSchema,
        response: { 201: userSchema, ...commonErrors },
      },
    },
    async (request, reply) =>
      reply.status(201).send(await services.users.create(principalOf(request), request.params.virtualServerId, request.body)),
  );

  app.get(
    "/virtual-servers/:virtualServerId/users",
    {
      schema: {
        operationId: "listUsers",
        summary: "Search users: by the start of user id, first or last name or email in any case, by group, by whether they hold tokens",
        params: virtualServerIdParam,
        querystring: z.strictObject({
          q: z.string().min(1).max(128).optional(),
          group: groupNameSchema.optional(),
          hasToken: z.enum(["true", "false"]).transform((value) => value === "true").optional(),
          cursor: z.string().max(512).optional(),
          limit: pageLimit,
        }),
        response: { 200: z.object({ items: z.array(userSchema), nextCursor: z.string().nullable() }), ...commonErrors },
      },
    },
    async (request) => services.users.list(principalOf(request), request.params.virtualServerId, request.query),
  );

  app.get(
    "/virtual-servers/:virtualServerId/users/:userId",
    { schema: { operationId: "getUser", params: userParams, response: { 200: userSchema, ...commonErrors } } },
    async (request) => services.users.get(principalOf(request), request.params.virtualServerId, request.params.userId),
  );

  app.patch(
    "/virtual-servers/:virtualServerId/users/:userId",
    {
      schema: { operationId: "updateUser", params: userParams, body: userUpdateSchema, response: { 200: userSchema, ...commonErrors } },
    },
    async (request) =>
      services.users.update(principalOf(request), request.params.virtualServerId, request.params.userId, request.body),
  );

  app.delete(
    "/virtual-servers/:virtualServerId/users/:userId",
    { schema: { operationId: "deleteUser", params: userParams, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await services.users.delete(principalOf(request), request.params.virtualServerId, request.params.userId);
      return reply.status(204).send(null);
    },
  );

  app.post(
    "/virtual-servers/:virtualServerId/users/import",
    {
      schema: {
        operationId: "importUsers",
        summary: "Import users from CSV (header row: userId, firstName, lastName, email, groups separated by ';'); good rows are kept, bad rows reported",
        params: virtualServerIdParam,
        body: z.strictObject({ csv: z.string().min(1) }),
        response: {
          200: z.object({
            imported: z.number().int(),
            failed: z.number().int(),
            errors: z.array(z.object({ line: z.number().int(), userId: z.string().nullable(), code: z.string(), message: z.string() })),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => services.importUsers(principalOf(request), request.params.virtualServerId, request.body.csv),
  );

  app.get(
    "/virtual-servers/:virtualServerId/groups",
    {
      schema: {
        operationId: "listGroups",
        params: virtualServerIdParam,
        response: { 200: z.object({ items: z.array(z.object({ name: z.string(), members: z.number().int() })) }), ...commonErrors },
      },
    },
    async (request) => ({ items: await services.users.listGroups(principalOf(request), request.params.virtualServerId) }),
  );
};

import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { bearerOf, principalOf } from "../../http/app.js";
import { commonErrors, errorResponse } from "../../http/schemas.js";
import { roles } from "./access.js";

const operatorSchema = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    role: z.enum(roles),
    virtualServerId: z.string(),
    scopeIncludesChildren: z.boolean(),
    disabled: z.boolean(),
    createdAt: z.string(),
  })
  .meta({ id: "Operator" });

export const operatorRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.post(
    "/sessions",
    {
      config: { public: true },
      schema: {
        operationId: "createSession",
        summary: "Log in with email and password; returns a bearer session token",
        security: [],
        body: z.strictObject({ email: z.string().min(1).max(254), password: z.string().min(1).max(1024) }),
        response: { 201: z.object({ token: z.string(), expiresAt: z.string() }), 400: errorResponse, 401: errorResponse, 429: errorResponse },
      },
    },
    async (request, reply) =>
      reply.status(201).send(await services.operators.createSession(request.body.email, request.body.password, request.ip)),
  );

  app.delete(
    "/sessions/current",
    {
      schema: {
        operationId: "deleteSession",
        summary: "Log out: the session token used for this request stops working",
        response: { 204: z.null(), 401: errorResponse },
      },
    },
    async (request, reply) => {
      principalOf(request);
      await services.operators.endSession(bearerOf(request.headers.authorization) ?? "");
      return reply.status(204).send(null);
    },
  );

  app.get(
    "/me",
    {
      schema: {
        operationId: "getCurrentPrincipal",
        summary: "Who the credentials belong to: role and scope",
        response: {
          200: z.object({
            actor: z.string(),
            operatorId: z.string().nullable(),
            role: z.enum(roles),
            virtualServerId: z.string().nullable(),
            scopeIncludesChildren: z.boolean(),
          }),
          401: errorResponse,
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      return {
        actor: principal.actor,
        operatorId: principal.operatorId,
        role: principal.role,
        virtualServerId: principal.scope.virtualServerId,
        scopeIncludesChildren: principal.scope.includesChildren,
      };
    },
  );

  app.post(
    "/operators",
    {
      schema: {
        operationId: "createOperator",
        summary: "Create an operator in a virtual server within your scope",
        body: z.strictObject({
          email: z.email().max(254),
          name: z.string().trim().min(1).max(128),
          role: z.enum(roles),
          virtualServerId: z.string().min(1).max(64),
          scopeIncludesChildren: z.boolean().default(false),
          password: z.string().min(12).max(1024).optional(),
        }),
        response: { 201: operatorSchema, ...commonErrors },
      },
    },
    async (request, reply) => reply.status(201).send(await services.operators.create(principalOf(request), request.body)),
  );

  app.get(
    "/operators",
    {
      schema: {
        operationId: "listOperators",
        summary: "Operators of a virtual server",
        querystring: z.strictObject({ virtualServerId: z.string().min(1).max(64) }),
        response: { 200: z.object({ items: z.array(operatorSchema) }), ...commonErrors },
      },
    },
    async (request) => ({ items: await services.operators.list(principalOf(request), request.query.virtualServerId) }),
  );

  app.post(
    "/operators/:operatorId/api-keys",
    {
      schema: {
        operationId: "createApiKey",
        summary: "Issue an API key for scripts; shown once, stored hashed",
        params: z.strictObject({ operatorId: z.string().min(1).max(64) }),
        body: z.strictObject({ name: z.string().trim().min(1).max(128) }),
        response: { 201: z.object({ id: z.string(), apiKey: z.string() }), ...commonErrors },
      },
    },
    async (request, reply) =>
      reply.status(201).send(await services.operators.createApiKey(principalOf(request), request.params.operatorId, request.body.name)),
  );

  const operatorParam = z.strictObject({ operatorId: z.string().min(1).max(64) });

  app.patch(
    "/operators/:operatorId",
    {
      schema: {
        operationId: "updateOperator",
        summary: "Rename, set a password, change the role or disable (not for oneself); disabling ends the operator's sessions",
        params: operatorParam,
        body: z.strictObject({
          name: z.string().trim().min(1).max(128).optional(),
          role: z.enum(roles).optional(),
          disabled: z.boolean().optional(),
          password: z.string().min(12).max(1024).optional(),
        }),
        response: { 200: operatorSchema, ...commonErrors },
      },
    },
    async (request) => services.operators.update(principalOf(request), request.params.operatorId, request.body),
  );

  app.get(
    "/operators/:operatorId/api-keys",
    {
      schema: {
        operationId: "listApiKeys",
        summary: "An operator's API keys (never the keys themselves): name, created, last used, revoked",
        params: operatorParam,
        response: {
          200: z.object({
            items: z.array(
              z.object({ id: z.string(), name: z.string(), createdAt: z.string(), lastUsedAt: z.string().nullable(), revokedAt: z.string().nullable() }),
            ),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => ({ items: await services.operators.listApiKeys(principalOf(request), request.params.operatorId) }),
  );

  app.delete(
    "/operators/:operatorId/api-keys/:keyId",
    {
      schema: {
        operationId: "revokeApiKey",
        summary: "Revoke an API key at once",
        params: z.strictObject({ operatorId: z.string().min(1).max(64), keyId: z.string().min(1).max(64) }),
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      await services.operators.revokeApiKey(principalOf(request), request.params.operatorId, request.params.keyId);
      return reply.status(204).send(null);
    },
  );
};

import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, pageLimit } from "../../http/schemas.js";
import { groupNameSchema, userIdSchema } from "../users/user.js";

const apps = z.array(z.enum(["tessera", "otp-app"])).min(1).max(2);
const tokenType = z.enum(["mobile", "hardware", "email"]);
const isoTime = z.iso.datetime({ offset: true });

const countsSchema = z.object({
  total: z.number().int(),
  pending: z.number().int(),
  emailed: z.number().int(),
  enrolled: z.number().int(),
  expired: z.number().int(),
  cancelled: z.number().int(),
});

export const taskSchema = z
  .object({
    id: z.string(),
    virtualServerId: z.string(),
    kind: z.enum(["manual", "rule", "migration"]),
    tokenType: z.string(),
    apps: z.array(z.enum(["tessera", "otp-app"])),
    stopAt: z.string(),
    status: z.enum(["open", "cancelled"]),
    createdBy: z.string(),
    createdAt: z.string(),
    counts: countsSchema,
  })
  .meta({ id: "ProvisioningTask" });

const selection = z.union([
  z.strictObject({ userIds: z.array(userIdSchema).min(1).max(1_000_000) }),
  z.strictObject({ group: groupNameSchema }),
  z.strictObject({
    search: z.strictObject({ q: z.string().min(1).max(128).optional(), group: groupNameSchema.optional(), hasToken: z.boolean().optional() }),
  }),
]);

const taskParam = z.strictObject({ taskId: z.string().min(1).max(64) });
const vsId = z.string().min(1).max(64);

export const provisioningRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  const provisioning = services.provisioning;

  app.post(
    "/provisioning/tasks",
    {
      schema: {
        operationId: "createProvisioningTask",
        summary: "Provision tokens from inventory to many users (a list, a group or a search), each getting an enrollment email; all or nothing",
        body: z.strictObject({ virtualServerId: vsId, users: selection, tokenType, apps: apps.optional(), stopAt: isoTime.optional() }),
        response: { 201: taskSchema, ...commonErrors },
      },
    },
    async (request, reply) => reply.status(201).send(await provisioning.createTask(principalOf(request), request.body)),
  );

  app.post(
    "/virtual-servers/:virtualServerId/users/:userId/provision",
    {
      schema: {
        operationId: "provisionToken",
        summary: "Provision one user a token (a task of one)",
        params: z.strictObject({ virtualServerId: vsId, userId: userIdSchema }),
        body: z.strictObject({ tokenType, apps: apps.optional(), stopAt: isoTime.optional() }),
        response: { 201: taskSchema, ...commonErrors },
      },
    },
    async (request, reply) =>
      reply.status(201).send(
        await provisioning.createTask(principalOf(request), {
          virtualServerId: request.params.virtualServerId,
          users: { userIds: [request.params.userId] },
          ...request.body,
        }),
      ),
  );

  app.get(
    "/provisioning/tasks",
    {
      schema: {
        operationId: "listProvisioningTasks",
        querystring: z.strictObject({ virtualServerId: vsId, cursor: z.string().max(64).optional(), limit: pageLimit }),
        response: { 200: z.object({ items: z.array(taskSchema), nextCursor: z.string().nullable() }), ...commonErrors },
      },
    },
    async (request) => provisioning.listTasks(principalOf(request), request.query.virtualServerId, request.query),
  );

  app.get(
    "/provisioning/tasks/:taskId",
    {
      schema: {
        operationId: "getProvisioningTask",
        summary: "A task with its counts (emailed, enrolled, pending, expired, cancelled)",
        params: taskParam,
        response: { 200: taskSchema, ...commonErrors },
      },
    },
    async (request) => provisioning.getTask(principalOf(request), request.params.taskId),
  );

  app.get(
    "/provisioning/tasks/:taskId/users",
    {
      schema: {
        operationId: "listProvisioningTaskUsers",
        summary: "Where each user of a task stands",
        params: taskParam,
        querystring: z.strictObject({ cursor: z.string().max(512).optional(), limit: pageLimit }),
        response: {
          200: z.object({
            items: z.array(
              z.object({
                userId: z.string(),
                email: z.string(),
                serial: z.string(),
                state: z.enum(["pending", "emailed", "enrolled", "expired", "cancelled"]),
                mailStatus: z.string().nullable(),
                expiresAt: z.string(),
                enrolledAt: z.string().nullable(),
              }),
            ),
            nextCursor: z.string().nullable(),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => provisioning.listTaskUsers(principalOf(request), request.params.taskId, request.query),
  );

  app.delete(
    "/provisioning/tasks/:taskId",
    {
      schema: {
        operationId: "cancelProvisioningTask",
        summary: "Remove a task: open enrollments die, their tokens return to inventory, unsent mails are dropped; enrolled tokens stay",
        params: taskParam,
        response: { 200: taskSchema, ...commonErrors },
      },
    },
    async (request) => provisioning.cancelTask(principalOf(request), request.params.taskId),
  );

  app.patch(
    "/provisioning/tasks/:taskId",
    {
      schema: {
        operationId: "updateProvisioningTask",
        summary: "Set a new stop date for the task's open enrollments",
        params: taskParam,
        body: z.strictObject({ stopAt: isoTime }),
        response: { 200: taskSchema, ...commonErrors },
      },
    },
    async (request) => provisioning.updateStopDate(principalOf(request), request.params.taskId, request.body.stopAt),
  );

  app.post(
    "/provisioning/tasks/:taskId/users/:userId/resend",
    {
      schema: {
        operationId: "resendEnrollment",
        summary: "Send a user a new enrollment email: a new code, and the old one stops working",
        params: z.strictObject({ taskId: z.string().min(1).max(64), userId: userIdSchema }),
        response: { 200: z.object({ userId: z.string(), serial: z.string(), expiresAt: z.string() }), ...commonErrors },
      },
    },
    async (request) => provisioning.resendEnrollment(principalOf(request), request.params.taskId, request.params.userId),
  );
};

const ruleSchema = z
  .object({ id: z.string(), virtualServerId: z.string(), group: z.string(), tokenType: z.string(), apps: z.array(z.enum(["tessera", "otp-app"])), createdAt: z.string() })
  .meta({ id: "ProvisioningRule" });

const migrationUser = z.object({
  userId: z.string(),
  serial: z.string(),
  target: z.string().nullable(),
  stage: z.enum(["not_started", "provisioned", "moved"]),
  newSerial: z.string().nullable(),
});

/** Rules by group membership, and the migration from a generic OTP app to the tessera app. */
export const ruleAndMigrationRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  app.post(
    "/provisioning/rules",
    {
      schema: {
        operationId: "createProvisioningRule",
        summary: "Provision a token to every member of a group (now and when they join); revoke it to inventory when they leave",
        body: z.strictObject({ virtualServerId: vsId, group: groupNameSchema, tokenType, apps: apps.optional() }),
        response: { 201: ruleSchema, ...commonErrors },
      },
    },
    async (request, reply) => reply.status(201).send(await services.provisioningRules.create(principalOf(request), request.body)),
  );

  app.get(
    "/provisioning/rules",
    {
      schema: {
        operationId: "listProvisioningRules",
        querystring: z.strictObject({ virtualServerId: vsId }),
        response: { 200: z.object({ items: z.array(ruleSchema) }), ...commonErrors },
      },
    },
    async (request) => ({ items: await services.provisioningRules.list(principalOf(request), request.query.virtualServerId) }),
  );

  app.delete(
    "/provisioning/rules/:ruleId",
    {
      schema: {
        operationId: "deleteProvisioningRule",
        summary: "Stop a rule; the tokens it gave stay with their users",
        params: z.strictObject({ ruleId: z.string().min(1).max(64) }),
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      await services.provisioningRules.delete(principalOf(request), request.params.ruleId);
      return reply.status(204).send(null);
    },
  );

  const vsParam = z.strictObject({ virtualServerId: vsId });

  app.get(
    "/virtual-servers/:virtualServerId/migration",
    {
      schema: {
        operationId: "planMigration",
        summary: "Users whose active mobile token is on a generic OTP app, and how far each has moved to the tessera app",
        params: vsParam,
        response: {
          200: z.object({
            virtualServerId: z.string(),
            total: z.number().int(),
            notStarted: z.number().int(),
            provisioned: z.number().int(),
            moved: z.number().int(),
            users: z.array(migrationUser),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => services.migration.plan(principalOf(request), request.params.virtualServerId),
  );

  app.post(
    "/virtual-servers/:virtualServerId/migration/start",
    {
      schema: {
        operationId: "startMigration",
        summary: "Provision each user not yet started a mobile token for the tessera app, as one task",
        params: vsParam,
        body: z.strictObject({ stopAt: isoTime.optional() }).optional(),
        response: { 200: z.object({ task: taskSchema.nullable() }), ...commonErrors },
      },
    },
    async (request) => ({ task: await services.migration.start(principalOf(request), request.params.virtualServerId, request.body ?? {}) }),
  );

  app.post(
    "/virtual-servers/:virtualServerId/migration/retire",
    {
      schema: {
        operationId: "retireMigratedTokens",
        summary: "Revoke every old otp-app token whose owner's tessera token is active, back to inventory; report reuse",
        params: vsParam,
        response: {
          200: z.object({ virtualServerId: z.string(), retired: z.number().int(), serials: z.array(z.string()), retiredEver: z.number().int(), reusedSince: z.number().int() }),
          ...commonErrors,
        },
      },
    },
    async (request) => services.migration.retire(principalOf(request), request.params.virtualServerId),
  );
};

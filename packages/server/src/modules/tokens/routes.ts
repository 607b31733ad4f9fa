import { decodeBase32 } from "@tessera/otp";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { fail } from "../../errors.js";
import { principalOf } from "../../http/app.js";
import { commonErrors, pageLimit, reasonBody } from "../../http/schemas.js";
import { tokenStates } from "./lifecycle.js";
import { parseSeedFile } from "./seed-import.js";
import { serialProblem } from "./serial.js";
import { generatedTokenTypes, tokenTypeIds } from "./types.js";

const pushOtpState = z.enum(["enabled", "disabled", "not_applicable"]);

export const tokenSchema = z
  .object({
    serial: z.string(),
    type: z.enum(tokenTypeIds),
    state: z.enum(tokenStates),
    virtualServerId: z.string(),
    user: z.object({ userId: z.string(), firstName: z.string(), lastName: z.string(), email: z.string() }).nullable(),
    otp: z.object({ mode: z.enum(["totp", "hotp"]), algorithm: z.string(), digits: z.number().int(), periodSeconds: z.number().int() }),
    hasKey: z.boolean(),
    failures: z.number().int(),
    lockedUntil: z.string().nullable(),
    stateReason: z.string().nullable(),
    stateChangedAt: z.string(),
    createdAt: z.string(),
    device: z
      .object({
        app: z.enum(["tessera", "otp-app"]),
        target: z.string().nullable(),
        deviceType: z.string().nullable(),
        appVersion: z.string().nullable(),
        pushAtEnrollment: pushOtpState,
        pushNow: pushOtpState,
        enrolledAt: z.string(),
      })
      .nullable(),
  })
  .meta({ id: "Token" });

const serialParam = z.strictObject({ serial: z.string().min(1).max(64) });
const vsId = z.string().min(1).max(64);
const moveBody = z
  .strictObject({
    fromVirtualServerId: vsId,
    toVirtualServerId: vsId,
    serials: z.array(z.string().min(1).max(64)).min(1).max(100_000).optional(),
    type: z.enum(tokenTypeIds).optional(),
    count: z.number().int().min(1).max(100_000).optional(),
  })
  .refine((body) => (body.serials !== undefined) !== (body.type !== undefined && body.count !== undefined), {
    message: "give either serials, or type and count",
  });
const moveResult = z.object({
  count: z.number().int(),
  serials: z.array(z.string()),
  fromVirtualServerId: z.string(),
  toVirtualServerId: z.string(),
});

const seedSchema = z.strictObject({
  /** Hex or base32. */
  secret: z.string().min(16).max(256),
  otpMode: z.enum(["totp", "hotp"]).default("totp"),
  digits: z.union([z.literal(6), z.literal(8)]).default(6),
  periodSeconds: z.number().int().min(10).max(300).default(30),
  algorithm: z.enum(["SHA1", "SHA256", "SHA512"]).default("SHA1"),
  counter: z.number().int().min(0).default(0),
});

function decodeSecret(text: string): Buffer {
  const bytes = /^([0-9a-fA-F]{2})+$/.test(text) ? Buffer.from(text, "hex") : decodeBase32(text);
  if (!bytes || bytes.length < 16) throw fail("VALIDATION_FAILED", { problems: "seed.secret: 16 bytes or more, as hex or base32" });
  return Buffer.from(bytes);
}

export const tokenRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  // A mistyped serial gets its own answer, not "not found".
  app.addHook("preHandler", async (request) => {
    const serial = (request.params as { serial?: string } | undefined)?.serial;
    const problem = serial === undefined ? null : serialProblem(serial);
    if (serial !== undefined && problem) throw fail("SERIAL_INVALID", { serial, problem });
  });

  app.post(
    "/tokens",
    {
      schema: {
        operationId: "addTokens",
        summary: "Add mobile or email tokens with generated serials to a virtual server's inventory",
        body: z.strictObject({ virtualServerId: vsId, type: z.enum(generatedTokenTypes), count: z.number().int().min(1).max(100_000) }),
        response: {
          201: z.object({ count: z.number().int(), firstSerial: z.string(), lastSerial: z.string(), serials: z.array(z.string()) }),
          ...commonErrors,
        },
      },
    },
    async (request, reply) => reply.status(201).send(await services.tokens.add(principalOf(request), request.body)),
  );

  app.post(
    "/tokens/import",
    {
      schema: {
        operationId: "importTokens",
        summary: "Import hardware tokens from a PSKC (RFC 6030) or CSV seed file; all or nothing",
        body: z.strictObject({
          virtualServerId: vsId,
          format: z.enum(["pskc", "csv"]),
          content: z.string().min(1),
          /** For encrypted PSKC: the pre-shared key, hex. */
          preSharedKey: z.string().regex(/^([0-9a-fA-F]{2}){16,32}$/).optional(),
        }),
        response: { 201: z.object({ count: z.number().int(), serials: z.array(z.string()) }), ...commonErrors },
      },
    },
    async (request, reply) => {
      const { virtualServerId, format, content, preSharedKey } = request.body;
      const seeds = parseSeedFile(format, content, preSharedKey ? Buffer.from(preSharedKey, "hex") : undefined);
      return reply.status(201).send(await services.tokens.importSeeds(principalOf(request), { virtualServerId, seeds }));
    },
  );

  app.get(
    "/tokens",
    {
      schema: {
        operationId: "listTokens",
        summary: "A virtual server's tokens by serial prefix, state, type, user, app and Push OTP state, a page at a time",
        querystring: z.strictObject({
          virtualServerId: vsId,
          serialPrefix: z.string().min(1).max(64).optional(),
          state: z.enum(tokenStates).optional(),
          type: z.enum(tokenTypeIds).optional(),
          userId: z.string().min(1).max(128).optional(),
          app: z.enum(["tessera", "otp-app"]).optional(),
          pushOtp: pushOtpState.optional(),
          cursor: z.string().max(512).optional(),
          limit: pageLimit,
        }),
        response: { 200: z.object({ items: z.array(tokenSchema), nextCursor: z.string().nullable() }), ...commonErrors },
      },
    },
    async (request) => services.tokens.list(principalOf(request), request.query),
  );

  app.get(
    "/tokens/:serial",
    { schema: { operationId: "getToken", params: serialParam, response: { 200: tokenSchema, ...commonErrors } } },
    async (request) => services.tokens.get(principalOf(request), request.params.serial),
  );

  app.post(
    "/tokens/allocate",
    {
      schema: {
        operationId: "allocateTokens",
        summary: "Move unassigned inventory tokens from a service provider to a child, within the child's capacity",
        body: moveBody,
        response: { 200: moveResult, ...commonErrors },
      },
    },
    async (request) => services.tokens.move(principalOf(request), request.body, "allocate"),
  );

  app.post(
    "/tokens/deallocate",
    {
      schema: {
        operationId: "deallocateTokens",
        summary: "Move unassigned inventory tokens from a child back to its service provider",
        body: moveBody,
        response: { 200: moveResult, ...commonErrors },
      },
    },
    async (request) => services.tokens.move(principalOf(request), request.body, "deallocate"),
  );

  const lifecycle = services.tokenLifecycle;
  const simpleActions = [
    ["suspend", "suspendToken", "Suspend: the token cannot authenticate and stays with its user", lifecycle.suspend],
    ["reactivate", "reactivateToken", "Reactivate a suspended token", lifecycle.reactivate],
    ["unlock", "unlockToken", "Unlock a locked token and clear its failure count", lifecycle.unlock],
  ] as const;
  for (const [path, operationId, summary, action] of simpleActions) {
    app.post(
      `/tokens/:serial/${path}`,
      { schema: { operationId, summary, params: serialParam, body: reasonBody.optional(), response: { 200: tokenSchema, ...commonErrors } } },
      async (request) => action(principalOf(request), request.params.serial, request.body?.reason),
    );
  }

  app.post(
    "/tokens/:serial/revoke",
    {
      schema: {
        operationId: "revokeToken",
        summary: "Revoke: unbind the user and destroy the device record; back to inventory for reuse, or lost",
        params: serialParam,
        body: z.strictObject({ to: z.enum(["inventory", "lost"]), reason: z.string().trim().min(1).max(500) }),
        response: { 200: tokenSchema, ...commonErrors },
      },
    },
    async (request) => lifecycle.revoke(principalOf(request), request.params.serial, request.body),
  );

  app.post(
    "/tokens/:serial/reinitialize",
    {
      schema: {
        operationId: "reinitializeToken",
        summary: "Return a lost token to inventory; hardware tokens need their new seed",
        params: serialParam,
        body: z.strictObject({ seed: seedSchema.optional(), reason: z.string().trim().min(1).max(500).optional() }).optional(),
        response: { 200: tokenSchema, ...commonErrors },
      },
    },
    async (request) => {
      const seed = request.body?.seed;
      return lifecycle.reinitialize(principalOf(request), request.params.serial, {
        seed: seed ? { ...seed, secret: decodeSecret(seed.secret) } : undefined,
        reason: request.body?.reason,
      });
    },
  );

  app.delete(
    "/tokens/:serial",
    {
      schema: {
        operationId: "deleteToken",
        summary: "Delete a lost token for good",
        params: serialParam,
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      await lifecycle.delete(principalOf(request), request.params.serial);
      return reply.status(204).send(null);
    },
  );
};

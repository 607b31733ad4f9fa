import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Services } from "../../core.js";
import { fail } from "../../errors.js";
import { bearerOf, principalOf, untilClosed } from "../../http/app.js";
import { commonErrors, errorResponse } from "../../http/schemas.js";

/** How long `getAuthChallenge` waits for the user's answer when `wait` is not given, in seconds. */
const DEFAULT_WAIT_SECONDS = 25;

/** A challenge id as Tessera makes them, printable ASCII: one holding NUL, spaces or other text names none. */
const challengeId = z.string().min(1).max(64).regex(/^[\x21-\x7e]+$/, "a challenge id (printable ASCII)");

/** REST authentication for applications: `POST /api/v1/auth` with the application's API key. */
export const authRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  /** The REST application whose API key the Authorization header carries; UNAUTHENTICATED otherwise. */
  const restApplicationOf = async (authorization: string | undefined) => {
    const bearer = bearerOf(authorization);
    const application = bearer ? await services.applications.authenticateApiKey(bearer) : null;
    if (!application || application.kind !== "rest") throw fail("UNAUTHENTICATED");
    return application;
  };

  app.post(
    "/auth",
    {
      config: { public: true },
      schema: {
        operationId: "authenticate",
        summary: "Does this user with this passcode get in? accept, or reject with a reason code",
        description: "Authenticate with the application's API key (Authorization: Bearer tak_...). The passcode is never logged or stored.",
        body: z.strictObject({
          userId: z.string().min(1).max(128),
          passcode: z.string().max(16),
          /** The address of the person logging in, when the application knows it: rate limits count per address. */
          sourceAddress: z.string().min(1).max(64).optional(),
        }),
        response: {
          200: z.object({
            result: z.enum(["accept", "reject", "pending"]),
            reason: z.enum(["user_unknown", "no_token", "wrong", "replayed", "locked", "rate_limited", "push_unavailable", "push_blocked"]).optional(),
            message: z.string().optional(),
            serial: z.string().optional(),
            challengeId: z.string().optional(),
            numberToMatch: z.string().optional(),
            expiresAt: z.string().optional(),
          }),
          400: errorResponse,
          401: errorResponse,
        },
      },
    },
    async (request) => {
      const application = await restApplicationOf(request.headers.authorization);
      const outcome = await services.auth.authenticate({
        application,
        userId: request.body.userId,
        passcode: request.body.passcode,
        source: request.body.sourceAddress ?? request.ip,
        method: "rest",
        client: { address: request.ip },
      });
      if (outcome.result === "accept") return { result: "accept" as const, serial: outcome.serial };
      if (outcome.result === "pending") {
        const { challengeId, numberToMatch, expiresAt, message } = outcome;
        return { result: "pending" as const, challengeId, numberToMatch, expiresAt, message };
      }
      return { result: "reject" as const, reason: outcome.reason, message: outcome.message };
    },
  );

  app.get(
    "/auth/challenges/:challengeId",
    {
      config: { public: true },
      schema: {
        operationId: "getAuthChallenge",
        summary: "Where a push login stands; waits up to `wait` seconds for the user's answer (long poll)",
        params: z.strictObject({ challengeId }),
        // Whole seconds, 0 to 60, written as digits: "", "0x1" or "1e1" are refused, not read as a number.
        querystring: z.strictObject({ wait: z.string().regex(/^(?:[0-5]?\d|60)$/, "whole seconds from 0 to 60").optional() }),
        response: {
          200: z.object({ status: z.enum(["pending", "accept", "reject"]), reason: z.string().optional(), serial: z.string().optional() }),
          400: errorResponse,
          401: errorResponse,
        },
      },
    },
    async (request, reply) => {
      const application = await restApplicationOf(request.headers.authorization);
      return services.auth.challengeOutcome(
        { application, method: "rest", client: { address: request.ip } },
        request.params.challengeId,
        Number(request.query.wait ?? DEFAULT_WAIT_SECONDS) * 1000,
        untilClosed(reply.raw),
      );
    },
  );

  app.delete(
    "/auth/challenges/:challengeId",
    {
      config: { public: true },
      schema: {
        operationId: "cancelAuthChallenge",
        summary: "Withdraw a push login nobody has answered yet (the user types the passcode instead, or left): the phone stops offering it",
        params: z.strictObject({ challengeId }),
        response: { 204: z.null(), 400: errorResponse, 401: errorResponse, 404: errorResponse, 409: errorResponse },
      },
    },
    async (request, reply) => {
      const application = await restApplicationOf(request.headers.authorization);
      const { challengeId } = request.params;
      const outcome = await services.push.cancel(challengeId, { id: application.id, virtualServerId: application.virtual_server_id }, { by: "withdrawn" });
      if (outcome === "not_found") throw fail("CHALLENGE_NOT_FOUND", { id: challengeId });
      if (outcome === "closed") throw fail("CHALLENGE_CLOSED", { id: challengeId, status: "no longer open" });
      return reply.status(204).send(null);
    },
  );

  app.post(
    "/tokens/:serial/resync",
    {
      schema: {
        operationId: "resyncToken",
        summary: "Resynchronise a token from two consecutive passcodes (HOTP counter, or TOTP clock drift)",
        params: z.strictObject({ serial: z.string().min(1).max(64) }),
        body: z.strictObject({ first: z.string().min(6).max(16), second: z.string().min(6).max(16) }),
        response: {
          200: z.object({ serial: z.string(), hotp_counter: z.number().optional(), drift_steps: z.number().optional(), last_totp_step: z.number().optional() }),
          ...commonErrors,
        },
      },
    },
    async (request) => services.resyncToken(principalOf(request), request.params.serial, request.body.first, request.body.second),
  );
};

import type { FastifyReply, FastifyRequest } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import QRCode from "qrcode";
import { z } from "zod";
import type { Services } from "../../core.js";
import { bodyDigest } from "../../crypto/device-signatures.js";
import { fail, TesseraError } from "../../errors.js";
import { untilClosed } from "../../http/app.js";
import { errorResponse } from "../../http/schemas.js";
import { CHALLENGE_STATUSES } from "../push/service.js";
import { enrolledPage, enrollPage, invalidCodePage, layout, otpAppPage, passcodeForm, possessionPage } from "./page.js";
import { detectPlatform } from "./platform.js";
import type { SignedRequest } from "./service.js";

declare module "fastify" {
  interface FastifyRequest {
    rawBody?: string;
  }
}

export function qrSvg(text: string): Promise<string> {
  return QRCode.toString(text, { type: "svg", margin: 1, errorCorrectionLevel: "M" });
}

/**
 * The page carries an enrollment code in its URL: no caching, no referrer to other
 * sites, nothing loaded from elsewhere, no framing.
 */
function pageHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header("content-type", "text/html; charset=utf-8")
    .header("cache-control", "no-store")
    .header("referrer-policy", "no-referrer")
    .header("x-content-type-options", "nosniff")
    .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
}

const codeParam = z.object({ code: z.string().max(64) });

/** Self-enrollment pages, `/enroll/{code}`. */
export const enrollmentPageRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  const enrollment = services.enrollment;
  app.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string" }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  const invalid = (reply: FastifyReply) => pageHeaders(reply).status(404).send(invalidCodePage());
  const refusal = (reply: FastifyReply, error: unknown) => {
    if (error instanceof TesseraError && error.code === "ENROLLMENT_CODE_INVALID") return invalid(reply);
    if (error instanceof TesseraError && error.status < 500) {
      return pageHeaders(reply).status(error.status).send(layout("Enrollment", `<div class="card"><h1>Not possible</h1><p>${error.message}</p></div>`));
    }
    throw error;
  };

  app.get("/enroll/:code", { schema: { hide: true, params: codeParam } }, async (request, reply) => {
    const code = request.params.code.toUpperCase();
    const found = await enrollment.lookup(code);
    if (!found) return invalid(reply);
    if (found.token.type !== "mobile") {
      return pageHeaders(reply).send(
        possessionPage({ userName: found.user.firstName || found.user.userId, virtualServerName: found.virtualServer.name, serial: found.token.serial, tokenType: found.token.type as "hardware" | "email", code }),
      );
    }
    const publicUrl = services.publicUrl();
    const autoEnrollUrl = `${publicUrl}/app/#/enroll?code=${code}`;
    return pageHeaders(reply).send(
      enrollPage({
        userName: found.user.firstName || found.user.userId,
        virtualServerName: found.virtualServer.name,
        serial: found.token.serial,
        expiresAt: new Date(found.enrollment.expires_at).toUTCString(),
        platform: detectPlatform(request.headers["user-agent"]),
        tesseraAllowed: found.apps.includes("tessera"),
        otpAppAllowed: found.apps.includes("otp-app"),
        appUrl: `${publicUrl}/app/`,
        autoEnrollUrl,
        nativeEnrollUrl: `tessera://enroll?server=${encodeURIComponent(publicUrl)}&code=${code}`,
        qrSvg: await qrSvg(autoEnrollUrl),
        otpAppActionPath: `/enroll/${code}/otp-app`,
      }),
    );
  });

  app.post("/enroll/:code/otp-app", { schema: { hide: true, params: codeParam } }, async (request, reply) => {
    const code = request.params.code.toUpperCase();
    try {
      const started = await enrollment.startOtpApp(code, detectPlatform(request.headers["user-agent"]));
      return pageHeaders(reply).send(
        otpAppPage({ serial: started.serial, qrSvg: await qrSvg(started.otpauthUri), secretBase32: started.secretBase32, confirmPath: `/enroll/${code}/otp-app/confirm` }),
      );
    } catch (error) {
      return refusal(reply, error);
    }
  });

  app.post("/enroll/:code/email", { schema: { hide: true, params: codeParam } }, async (request, reply) => {
    const code = request.params.code.toUpperCase();
    try {
      const found = await enrollment.lookup(code);
      if (!found) return invalid(reply);
      const sent = await enrollment.sendEmailCode(code);
      return pageHeaders(reply).send(
        possessionPage({ userName: found.user.firstName || found.user.userId, virtualServerName: found.virtualServer.name, serial: sent.serial, tokenType: "email", code, sentTo: sent.sentTo }),
      );
    } catch (error) {
      return refusal(reply, error);
    }
  });

  app.post("/enroll/:code/confirm", { schema: { hide: true, params: codeParam } }, async (request, reply) => {
    const code = request.params.code.toUpperCase();
    // A JSON body can hold anything here; String() of an object can throw (a shadowed toString, deep nesting).
    const submitted = (request.body as Record<string, unknown> | undefined)?.otp;
    const otp = typeof submitted === "string" ? submitted : "";
    const found = await enrollment.lookup(code);
    if (!found) return invalid(reply);
    try {
      const done = await enrollment.confirmPossession(code, otp);
      return pageHeaders(reply).send(enrolledPage({ serial: done.serial, app: done.type === "email" ? "your email address" : "your hardware token", pushApplications: done.pushApplications }));
    } catch (error) {
      if (error instanceof TesseraError && (error.code === "ENROLLMENT_OTP_WRONG" || error.code === "RATE_LIMITED")) {
        return pageHeaders(reply)
          .status(error.status)
          .send(
            possessionPage({
              userName: found.user.firstName || found.user.userId,
              virtualServerName: found.virtualServer.name,
              serial: found.token.serial,
              tokenType: found.token.type as "hardware" | "email",
              code,
              sentTo: found.token.type === "email" ? "your address" : undefined,
              error: error.message,
            }),
          );
      }
      return refusal(reply, error);
    }
  });

  app.post("/enroll/:code/otp-app/confirm", { schema: { hide: true, params: codeParam } }, async (request, reply) => {
    const code = request.params.code.toUpperCase();
    // A JSON body can hold anything here; String() of an object can throw (a shadowed toString, deep nesting).
    const submitted = (request.body as Record<string, unknown> | undefined)?.otp;
    const otp = typeof submitted === "string" ? submitted : "";
    try {
      const done = await enrollment.confirmOtpApp(code, otp);
      return pageHeaders(reply).send(enrolledPage({ serial: done.serial, app: "your authenticator app", pushApplications: done.pushApplications }));
    } catch (error) {
      if (error instanceof TesseraError && error.code === "ENROLLMENT_OTP_WRONG") {
        return pageHeaders(reply)
          .status(400)
          .send(
            layout(
              "Confirm your token",
              `<div class="card"><h1>Confirm with your first passcode</h1><p class="error">${error.message}</p>
${passcodeForm(`/enroll/${code}/otp-app/confirm`)}</div>`,
            ),
          );
      }
      return refusal(reply, error);
    }
  });
};

/** A browser's push subscription (the Push API's PushSubscription.toJSON()). */
const pushSubscriptionSchema = z.strictObject({
  endpoint: z.url({ protocol: /^https$/ }).max(2048),
  expirationTime: z.number().nullable().optional(),
  keys: z.strictObject({ p256dh: z.string().min(1).max(200), auth: z.string().min(1).max(100) }),
});

const platformSchema = z.strictObject({
  os: z.string().min(1).max(40),
  osVersion: z.string().max(40).nullable().optional(),
  deviceType: z.string().min(1).max(40),
  appVersion: z.string().min(1).max(40),
});
const publicKey = z.string().regex(/^[A-Za-z0-9_-]{87}$/, "an uncompressed P-256 point, base64url");

async function signedRequestOf(request: FastifyRequest): Promise<SignedRequest> {
  const header = (name: string) => {
    const value = request.headers[name];
    return typeof value === "string" ? value : "";
  };
  const timestampMs = Number(header("x-tessera-timestamp"));
  const deviceId = header("x-tessera-device-id");
  const signature = header("x-tessera-signature");
  if (!deviceId || !signature || !Number.isSafeInteger(timestampMs)) throw fail("SIGNATURE_INVALID", { problem: "missing signature headers" });
  return {
    method: request.method,
    path: request.url,
    bodySha256Base64url: bodyDigest(request.rawBody ?? ""),
    timestampMs,
    deviceId,
    signature,
  };
}

const deviceErrors = { 400: errorResponse, 401: errorResponse, 404: errorResponse, 409: errorResponse };

/** The device API of the tessera app, `/device/v1`. */
export const deviceRoutes: FastifyPluginAsyncZod<{ services: Services }> = async (app, { services }) => {
  const enrollment = services.enrollment;
  /** A subscription is refused, not stored, when the server would never post to its push service. */
  const refuseUnlistedPushService = (subscription: { endpoint: string } | null | undefined) => {
    if (subscription && !services.webPush.accepts(subscription.endpoint)) throw fail("PUSH_SERVICE_NOT_ALLOWED", { endpoint: new URL(subscription.endpoint).host });
  };
  // Signed requests cover the exact body bytes: keep them beside the parsed JSON.
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    request.rawBody = body as string;
    try {
      done(null, body === "" ? undefined : JSON.parse(body as string));
    } catch {
      done(fail("MALFORMED_JSON"), undefined);
    }
  });

  app.post(
    "/enrollments",
    {
      schema: {
        operationId: "enrollDevice",
        summary: "Key agreement, step 1: the app sends the code and its public keys; the server answers with its ECDH public key and the OTP parameters",
        body: z.strictObject({
          code: z.string().min(1).max(64),
          agreementPublicKey: publicKey,
          signingPublicKey: publicKey,
          deviceId: z.string().min(1).max(64).optional(),
          platform: platformSchema,
          pushPermitted: z.boolean(),
          pushSubscription: pushSubscriptionSchema.optional(),
          liveCapable: z.boolean().optional(),
        }),
        response: {
          201: z.object({
            enrollmentId: z.string(),
            deviceId: z.string(),
            serial: z.string(),
            serverPublicKey: z.string(),
            otp: z.object({ algorithm: z.enum(["SHA1", "SHA256", "SHA512"]), digits: z.number().int(), periodSeconds: z.number().int() }),
            virtualServer: z.object({ id: z.string(), name: z.string() }),
            user: z.object({ userId: z.string() }),
          }),
          ...deviceErrors,
        },
      },
    },
    async (request, reply) => {
      refuseUnlistedPushService(request.body.pushSubscription);
      return reply.status(201).send(await enrollment.enrollDevice({ ...request.body, code: request.body.code.toUpperCase() }));
    },
  );

  app.post(
    "/enrollments/:enrollmentId/confirm",
    {
      schema: {
        operationId: "confirmEnrollment",
        summary: "Key agreement, step 2: the first passcode, signed with the device key; the token becomes active",
        params: z.strictObject({ enrollmentId: z.string().min(1).max(64) }),
        body: z.strictObject({ otp: z.string().min(1).max(16) }),
        response: {
          200: z.object({
            serial: z.string(),
            deviceId: z.string(),
            app: z.enum(["tessera", "otp-app"]),
            pushAtEnrollment: z.enum(["enabled", "disabled", "not_applicable"]),
            pushApplications: z.array(z.string()),
          }),
          ...deviceErrors,
        },
      },
    },
    async (request) => {
      const result = await enrollment.confirmEnrollment(request.params.enrollmentId, request.body.otp, await signedRequestOf(request));
      return { serial: result.serial, deviceId: result.deviceId, app: result.app, pushAtEnrollment: result.pushAtEnrollment, pushApplications: result.pushApplications };
    },
  );

  app.put(
    "/devices/:deviceId/settings",
    {
      schema: {
        operationId: "updateDeviceSettings",
        summary:
          "Autosend Passcode on or off (signed): changes the current Push OTP state of the device's tokens; with pushSubscription, where Web Push reaches the device (null: nowhere). A pushSubscription alone (a renewed one) replaces the device's while Autosend Passcode is on, and is ignored while it is off",
        params: z.strictObject({ deviceId: z.string().min(1).max(64) }),
        body: z
          .strictObject({ autosendPasscode: z.boolean().optional(), pushSubscription: pushSubscriptionSchema.nullable().optional() })
          .refine((body) => body.autosendPasscode !== undefined || body.pushSubscription !== undefined, "autosendPasscode, pushSubscription or both"),
        response: { 200: z.object({ deviceId: z.string(), pushNow: z.enum(["enabled", "disabled"]), tokens: z.array(z.string()) }), ...deviceErrors },
      },
    },
    async (request) => {
      refuseUnlistedPushService(request.body.pushSubscription);
      const result = await enrollment.updateDeviceSettings(request.params.deviceId, request.body, await signedRequestOf(request));
      return { deviceId: result.deviceId, pushNow: result.pushNow as "enabled" | "disabled", tokens: result.tokens };
    },
  );

  app.get(
    "/web-push",
    {
      schema: {
        operationId: "getWebPushKey",
        summary: "The VAPID public key (RFC 8292) the app subscribes to Web Push with, so a push login reaches it when it is not running",
        response: { 200: z.object({ publicKey: z.string() }) },
      },
    },
    async () => ({ publicKey: await services.webPush.publicKey() }),
  );

  const challengeSchema = z.object({
    id: z.string(),
    serials: z.array(z.string()).optional(),
    resourceName: z.string(),
    source: z.string(),
    numberToMatch: z.string(),
    createdAt: z.string(),
    expiresAt: z.string(),
    status: z.enum(CHALLENGE_STATUSES),
  });

  app.get(
    "/devices/:deviceId/challenges",
    {
      schema: {
        operationId: "pollChallenges",
        summary: "The signed poll: pending push logins for this device, waiting up to `wait` seconds for one",
        params: z.strictObject({ deviceId: z.string().min(1).max(64) }),
        querystring: z.strictObject({ wait: z.coerce.number().int().min(0).max(60).default(25) }),
        response: { 200: z.object({ items: z.array(challengeSchema) }), ...deviceErrors },
      },
    },
    async (request, reply) => ({ items: await services.push.pendingForDevice(request.params.deviceId, await signedRequestOf(request), request.query.wait * 1000, untilClosed(reply.raw)) }),
  );

  app.post(
    "/challenges/:challengeId/answer",
    {
      schema: {
        operationId: "answerChallenge",
        summary: "Approve (with the current passcode: autosend), deny, or deny and report fraud; signed with the device key",
        params: z.strictObject({ challengeId: z.string().min(1).max(64) }),
        body: z.strictObject({ decision: z.enum(["approve", "deny", "fraud"]), serial: z.string().min(1).max(64).optional(), otp: z.string().min(1).max(16).optional() }),
        response: { 200: z.object({ status: z.enum(CHALLENGE_STATUSES) }), ...deviceErrors },
      },
    },
    async (request) => services.push.answer(request.params.challengeId, await signedRequestOf(request), request.body),
  );

  app.get(
    "/devices/:deviceId/live",
    {
      schema: {
        operationId: "liveChallenges",
        summary: "The live connection while the app runs: a signed event stream (text/event-stream) of push logins for this device (`challenge` events) and their ends (`ended`, with the id)",
        params: z.strictObject({ deviceId: z.string().min(1).max(64) }),
        response: { 200: z.string(), ...deviceErrors },
      },
    },
    async (request, reply) => {
      // Checked before the stream opens, so a bad signature gets its error status.
      await services.push.authorizeLive(request.params.deviceId, await signedRequestOf(request));
      let close = () => {};
      const closed = new Promise<void>((resolve) => (close = resolve));
      reply.hijack();
      reply.raw.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
      reply.raw.write(": connected\n\n");
      // A comment line now and then keeps proxies from closing a quiet stream.
      const keepalive = setInterval(() => reply.raw.write(": keepalive\n\n"), 15_000);
      reply.raw.on("close", () => close());
      try {
        await services.push.live(
          request.params.deviceId,
          {
            challenge: (challenge) => reply.raw.write(`event: challenge\ndata: ${JSON.stringify(challenge)}\n\n`),
            // Answered, expired or cancelled: the app stops offering it.
            ended: (id) => reply.raw.write(`event: ended\ndata: ${JSON.stringify({ id })}\n\n`),
          },
          closed,
        );
      } finally {
        clearInterval(keepalive);
        reply.raw.end();
      }
      return reply;
    },
  );
};

import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Services } from "../core.js";
import { fail, invalid, TesseraError } from "../errors.js";
import type { Principal } from "../modules/operators/access.js";
import { applicationRoutes } from "../modules/applications/routes.js";
import { auditRoutes } from "../modules/audit/routes.js";
import { authRoutes } from "../modules/auth/routes.js";
import { deviceRoutes, enrollmentPageRoutes } from "../modules/enrollment/routes.js";
import { mailRoutes } from "../modules/mail/routes.js";
import { provisioningRoutes, ruleAndMigrationRoutes } from "../modules/provisioning/routes.js";
import { operatorRoutes } from "../modules/operators/routes.js";
import { policyRoutes } from "../modules/policy/routes.js";
import { tokenRoutes } from "../modules/tokens/routes.js";
import { userRoutes } from "../modules/users/routes.js";
import { virtualServerRoutes } from "../modules/virtual-servers/routes.js";
import { isMigrated } from "../storage/migrate.js";
import { webAppRoutes } from "./web-app.js";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** Routes reachable without credentials. */
    public?: boolean;
  }
}

export interface HttpOptions {
  bodyLimitBytes: number;
  logLevel: string;
}

/**
 * The credential of an `Authorization: Bearer ...` header, the scheme in any case (RFC 9110
 * section 11.1: "bearer" is "Bearer"); undefined for any other header or none.
 */
export function bearerOf(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^bearer +(\S.*)$/i.exec(header);
  return match ? match[1]!.trim() : undefined;
}

/**
 * Aborts when the response is closed: answered, or its client gone before the answer. A
 * long poll ends its looks at the database when nobody is left to tell.
 */
export function untilClosed(response: ServerResponse): AbortSignal {
  // Closed already (the client went while its key or signature was checked): no look at all.
  if (response.closed || response.destroyed) return AbortSignal.abort();
  const closed = new AbortController();
  response.once("close", () => closed.abort());
  return closed.signal;
}

/** The principal of an authenticated route; the onRequest hook guarantees one. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw fail("UNAUTHENTICATED");
  return request.principal;
}

function errorBody(error: TesseraError) {
  return { error: { code: error.code, message: error.message, ...(error.details === undefined ? {} : { details: error.details }) } };
}

/** Maps every failure to `{ error: { code, message } }` with a catalogued code. */
function toTesseraError(error: FastifyError, limit: number): TesseraError {
  if (error instanceof TesseraError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const problems = error.validation.map((issue) => {
      const where = `${error.validationContext ?? "body"}${issue.instancePath.replaceAll("/", ".")}`.replace(/\.$/, "");
      return `${where}: ${issue.message}`;
    });
    return invalid(problems);
  }
  // The client stopped sending mid-body: Node aborts the request (ECONNRESET), or the
  // body came out shorter than its Content-Length.
  if ((error as { code?: string }).code === "ECONNRESET" || error.message === "aborted") return fail("REQUEST_INCOMPLETE");
  switch (error.code) {
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return fail("REQUEST_INCOMPLETE");
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return fail("MALFORMED_JSON");
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return fail("BODY_TOO_LARGE", { limit });
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return fail("UNSUPPORTED_MEDIA_TYPE");
  }
  if (error instanceof SyntaxError && error.statusCode === 400) return fail("MALFORMED_JSON");
  // PostgreSQL text cannot hold NUL (22021): a value that does is refused, and the
  // statement that met it changed nothing.
  if ((error as { code?: string }).code === "22021") return invalid(["a value holds a NUL character (\\0), which no id, name or text here may hold"]);
  return fail("INTERNAL");
}

/**
 * Requests Node's HTTP parser cannot read never reach a route: they get the catalogue's
 * error shape too, written straight to the socket, which is then closed.
 */
function answerUnreadableRequest(error: Error & { code?: string }, socket: Duplex): void {
  // A response already under way on this connection (a device's event stream) cannot be
  // followed by another: as Node's own handler does, only close it.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const mapped = fail(error.code === "HPE_HEADER_OVERFLOW" ? "HEADERS_TOO_LARGE" : error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "REQUEST_TIMEOUT" : "MALFORMED_REQUEST");
  const body = JSON.stringify(errorBody(mapped));
  const reason = { 400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large" }[mapped.status] ?? "Bad Request";
  socket.end(`HTTP/1.1 ${mapped.status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** The longest path parameter the router takes (Fastify's default, 100, is below a user id's 128). */
const MAX_PATH_PARAMETER_LENGTH = 256;

export async function buildHttpApp(services: Services, options: HttpOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logLevel === "silent" ? false : { level: options.logLevel, redact: ["req.headers.authorization"] },
    bodyLimit: options.bodyLimitBytes,
    // Request ids in logs, from a proxy's header when there is one.
    requestIdHeader: "x-request-id",
    // Devices' live connections and long polls stay open: on shutdown they are closed,
    // and the devices reconnect (to another node).
    forceCloseConnections: true,
    // Room for every id the API gives out or accepts in a path (a user id may be 128
    // characters); the router refuses a longer one before routing.
    routerOptions: { maxParamLength: MAX_PATH_PARAMETER_LENGTH },
    clientErrorHandler: answerUnreadableRequest,
    // A path whose percent-encoding does not decode (/api/v1/applications/%) gets the
    // catalogue's shape too, not Fastify's own.
    frameworkErrors: (error, _request, reply) => {
      // Fastify's router refuses a path parameter past maxParamLength here too.
      const mapped = error.code === "FST_ERR_MAX_PARAM_LENGTH" ? fail("PATH_PARAMETER_TOO_LONG", { limit: MAX_PATH_PARAMETER_LENGTH }) : fail("MALFORMED_REQUEST");
      void (reply as unknown as FastifyReply).status(mapped.status).send(errorBody(mapped));
    },
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest("principal", null);

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const mapped = toTesseraError(error, options.bodyLimitBytes);
    if (mapped.code === "INTERNAL") request.log.error({ err: error }, "unexpected error");
    if (mapped.code === "RATE_LIMITED") void reply.header("retry-after", String((mapped.details as { retryAfterSeconds: number }).retryAfterSeconds));
    void reply.status(mapped.status).send(errorBody(mapped));
  });
  app.setNotFoundHandler((request, reply) => {
    const error = fail("ROUTE_NOT_FOUND", { method: request.method, url: request.url.split("?")[0] });
    void reply.status(404).send(errorBody(error));
  });

  app.addHook("onRequest", async (request) => {
    if (!request.url.startsWith("/api/v1/") || request.routeOptions.config.public) return;
    const header = request.headers.authorization;
    const bearer = bearerOf(header);
    const principal = bearer ? await services.operators.authenticate(bearer) : null;
    if (!principal) throw fail("UNAUTHENTICATED");
    request.principal = principal;
  });

  // No id in a path holds NUL, and PostgreSQL text cannot: one that does is refused
  // alike on either database, before a route reads it. (A query value with NUL that
  // reaches PostgreSQL is refused there, 22021 above; a search folds it away.) Only
  // routes with path parameters pay for the look: not a login, not /healthz.
  const refuseNulInPath = async (request: FastifyRequest) => {
    for (const [name, value] of Object.entries(request.params as Record<string, unknown>)) {
      if (typeof value === "string" && value.includes("\0")) throw invalid([`params.${name}: holds a NUL character`]);
    }
  };
  app.addHook("onRoute", (route) => {
    if (!route.url.includes(":")) return;
    const own = route.preValidation;
    (route as { preValidation?: unknown }).preValidation = [...(Array.isArray(own) ? own : own ? [own] : []), refuseNulInPath];
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "Tessera admin API",
        version: "1",
        description: "Virtual servers, operators, users, tokens, policies and the audit trail. Errors are `{ error: { code, message } }`.",
      },
      servers: [{ url: services.publicUrl() }],
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "An API key (tsk_...) or a session token (tss_...)" } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
    // The schemas the paths refer to by name (.meta({ id })) go into components.schemas.
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, { routePrefix: "/api/docs" });

  // The server's address as it is now (a port picked at start is known only once it listens).
  app.get("/api/openapi.json", { schema: { hide: true }, config: { public: true } }, async () => ({ ...app.swagger(), servers: [{ url: services.publicUrl() }] }));

  app.get("/healthz", { schema: { hide: true } }, async () => ({ status: "ok" }));
  // Prometheus text format: counters and latency histograms, no user data.
  app.get("/metrics", { schema: { hide: true } }, async (_request, reply) => {
    const metrics = await services.metrics.render();
    return reply.header("content-type", metrics.contentType).send(metrics.body);
  });
  app.addHook("onResponse", async (request, reply) => {
    services.metrics.httpRequest(request.routeOptions.url ?? "unmatched", reply.statusCode, reply.elapsedTime / 1000);
  });
  app.get("/readyz", { schema: { hide: true } }, async (_request, reply) => {
    try {
      const ready = await isMigrated(services.storage);
      return reply.status(ready ? 200 : 503).send({ status: ready ? "ready" : "migrations pending" });
    } catch {
      return reply.status(503).send({ status: "database unreachable" });
    }
  });

  await app.register(
    async (api) => {
      await api.register(operatorRoutes, { services });
      await api.register(virtualServerRoutes, { services });
      await api.register(userRoutes, { services });
      await api.register(tokenRoutes, { services });
      await api.register(policyRoutes, { services });
      await api.register(auditRoutes, { services });
      await api.register(mailRoutes, { services });
      await api.register(applicationRoutes, { services });
      await api.register(authRoutes, { services });
      await api.register(provisioningRoutes, { services });
      await api.register(ruleAndMigrationRoutes, { services });
    },
    { prefix: "/api/v1" },
  );
  await app.register(deviceRoutes, { services, prefix: "/device/v1" });
  await app.register(enrollmentPageRoutes, { services });
  await app.register(webAppRoutes);

  return app;
}

import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import type { KyselyConfig } from "kysely";
import { afterAll, beforeAll } from "vitest";
import type { DatabaseKind } from "../storage/database.js";
import { createTestCore, type TestCore } from "../testing/databases.js";
import { createTenant, type TestTenant } from "../testing/fixtures.js";
import { buildHttpApp } from "./app.js";

/** The HTTP app over a test core, driven in-process with inject (no sockets). */
export async function createTestApp(core: TestCore, options: { bodyLimitBytes?: number } = {}) {
  const app: FastifyInstance = await buildHttpApp(core.services, {
    bodyLimitBytes: options.bodyLimitBytes ?? 1024 * 1024,
    logLevel: "silent",
  });
  await app.ready();
  const call = async (method: string, url: string, key: string | null, body?: unknown, headers: Record<string, string> = {}) => {
    const response: LightMyRequestResponse = await app.inject({
      method: method as "GET",
      url,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
      ...(body === undefined ? {} : typeof body === "string" ? { payload: body, headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers } } : { payload: body as object }),
    });
    const json = response.body.length > 0 && response.headers["content-type"]?.toString().includes("json") ? (response.json() as Record<string, unknown>) : null;
    return { status: response.statusCode, json: json as any, body: response.body }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  return { app, call, close: () => app.close() };
}

export type TestApp = Awaited<ReturnType<typeof createTestApp>>;

/**
 * The usual setting of an HTTP test suite, made in its beforeAll and closed in its
 * afterAll: a test core on the given database, its HTTP app and one tenant.
 * `ready` hands them to the suite's own variables (and may prepare more).
 */
export function useTestApp(
  kind: DatabaseKind,
  tenantName: string,
  ready: (setting: { core: TestCore; api: TestApp; t: TestTenant }) => void | Promise<void>,
  options: { bodyLimitBytes?: number; log?: KyselyConfig["log"] } = {},
): void {
  let core: TestCore | undefined;
  let api: TestApp | undefined;
  beforeAll(async () => {
    core = await createTestCore(kind, { log: options.log });
    api = await createTestApp(core, options);
    await ready({ core, api, t: await createTenant(core.services, tenantName) });
  });
  afterAll(async () => {
    await api?.close();
    await core?.close();
  });
}
